//! A made-up Consolidated Screening List (CSL) in the JSON shape trade.gov publishes, and a
//! labelled matching set built from it: for the screening tests and benchmark. Nothing is
//! fetched; the same `seed` gives the same bytes.
//!
//! [`generate`] writes `n` entries: companies in the styles of several countries (Chinese
//! "City Core Industry Co., Ltd.", Russian "OOO Core", Iranian "Core Core Company", Emirati
//! "Al Core General Trading LLC", Hong Kong "Adjective Noun Trading Limited", German "Core
//! Industry GmbH") and persons with transliterable names ("SURNAME, Given Patronymic" as the
//! SDN list writes them), with aliases, addresses, programmes, dates, ids and the real source
//! strings. [`labelled`] reads such a file back and makes queries from it: positives
//! (transliterations, word order, dropped or changed legal forms, typos, a dropped patronymic,
//! of listed names and aliases) and negatives (unrelated names from words the list never uses,
//! names sharing only a legal form, or a city, an industry word or a given name).
//!
//! The names are invented from syllables and common given names: no real party's record is
//! reproduced. Never for screening anything real.

use serde_json::{json, Value};

/// A deterministic generator (SplitMix64): no dependency, the same stream everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The CSL's source strings, as published.
pub mod sources {
    /// BIS Entity List.
    pub const EL: &str = "Entity List (EL) - Bureau of Industry and Security";
    /// BIS Denied Persons List.
    pub const DPL: &str = "Denied Persons List (DPL) - Bureau of Industry and Security";
    /// BIS Military End User List.
    pub const MEU: &str = "Military End User (MEU) List - Bureau of Industry and Security";
    /// BIS Unverified List.
    pub const UVL: &str = "Unverified List (UVL) - Bureau of Industry and Security";
    /// OFAC Specially Designated Nationals.
    pub const SDN: &str = "Specially Designated Nationals (SDN) - Treasury Department";
    /// OFAC Foreign Sanctions Evaders.
    pub const FSE: &str = "Foreign Sanctions Evaders (FSE) - Treasury Department";
    /// OFAC Sectoral Sanctions Identifications.
    pub const SSI: &str = "Sectoral Sanctions Identifications List (SSI) - Treasury Department";
    /// OFAC Chinese Military-Industrial Complex companies.
    pub const CMIC: &str =
        "Non-SDN Chinese Military-Industrial Complex Companies List (CMIC) - Treasury Department";
    /// State Department nonproliferation sanctions.
    pub const ISN: &str = "Nonproliferation Sanctions (ISN) - State Department";
    /// State Department ITAR debarred parties.
    pub const DTC: &str = "ITAR Debarred (DTC) - State Department";
}

// ---------------------------------------------------------------- vocabulary

/// Pinyin syllables for Chinese company cores ("Hengtai") and given names.
const CN_SYL: &[&str] = &[
    "heng", "tai", "xin", "da", "hua", "zhong", "kang", "rui", "feng", "sheng", "yuan", "bao",
    "tian", "hai", "guang", "ming", "wei", "an", "fu", "hong", "jia", "kai", "mei", "ning", "qi",
    "shun", "tong", "xiang", "yi", "yong", "zhi", "chuang", "de", "hao", "jun", "lei", "peng",
    "quan", "run", "sen", "tao", "wen", "xu", "yao", "ze",
];
/// Syllables the list never uses: the cores of negative queries.
const CN_SYL_HELD: &[&str] = &[
    "jin", "long", "bo", "cui", "dong", "gui", "lan", "mu", "pei", "song", "ou", "nuo",
];
const CN_CITY: &[&str] = &[
    "Shenzhen",
    "Beijing",
    "Shanghai",
    "Guangzhou",
    "Wuhan",
    "Chengdu",
    "Xi'an",
    "Hangzhou",
    "Tianjin",
    "Nanjing",
    "Suzhou",
    "Dalian",
    "Harbin",
    "Changsha",
    "Hefei",
];
const CN_IND: &[&str] = &[
    "Electronics Technology",
    "Microelectronics",
    "Semiconductor",
    "Optoelectronic Technology",
    "Intelligent Technology",
    "Aerospace Technology",
    "Precision Machinery",
    "New Materials",
    "Information Technology",
    "Computing Technology",
    "Communication Equipment",
    "Import and Export",
    "Instrument",
    "Photonics",
];
const CN_FORM: &[&str] = &[
    "Co., Ltd.",
    "Co. Ltd",
    "Company Limited",
    "Limited",
    "Group Co., Ltd.",
];
const CN_SURNAME: &[(&str, &str)] = &[
    ("Zhang", "Chang"),
    ("Wang", "Wong"),
    ("Liu", "Lau"),
    ("Chen", "Chan"),
    ("Yang", "Yeung"),
    ("Huang", "Wong"),
    ("Zhao", "Chao"),
    ("Zhou", "Chou"),
    ("Xu", "Hsu"),
    ("Sun", "Suen"),
    ("Zhu", "Chu"),
    ("Guo", "Kuo"),
    ("Lin", "Lam"),
    ("Luo", "Lo"),
    ("Gao", "Kao"),
    ("Zheng", "Cheng"),
    ("Xie", "Hsieh"),
    ("Jiang", "Chiang"),
    ("Cai", "Tsai"),
    ("Qian", "Chien"),
];

const RU_STEM: &[&str] = &[
    "Tekhno", "Avia", "Neft", "Energo", "Prom", "Radio", "Elektro", "Mash", "Stroy", "Sever",
    "Vostok", "Ural", "Sibir", "Baltik", "Spets", "Nauch", "Optik", "Kvant", "Mikro", "Polyus",
    "Zvezda", "Kristall", "Granit", "Almaz", "Vega", "Khim", "Gidro", "Avto", "Agro", "Metall",
];
const RU_END: &[&str] = &[
    "prom", "tekh", "servis", "resurs", "snab", "komplekt", "sistema", "pribor", "invest", "trans",
    "stal", "soyuz", "kom", "lab", "tsentr",
];
const RU_SECOND: &[&str] = &[
    "", "", "", "Sever", "Yug", "Plyus", "Vostok", "Zapad", "Tsentr", "Market", "Proekt",
];
const RU_FORM_LEAD: &[&str] = &["OOO", "AO", "JSC", "PJSC", "ZAO"];
const RU_STEM_HELD: &[&str] = &["Ryb", "Les", "Torg", "Kosmo", "Termo", "Bio"];
const RU_END_HELD: &[&str] = &["dom", "mir", "grad", "flot"];

/// Russian given names with their transliterations.
const RU_GIVEN: &[&[&str]] = &[
    &["Aleksandr", "Alexander", "Aleksander"],
    &["Yevgeny", "Evgeni", "Evgeniy", "Yevgeniy"],
    &["Sergei", "Sergey"],
    &["Dmitri", "Dmitry", "Dmitriy"],
    &["Yuri", "Yury", "Iouri"],
    &["Andrei", "Andrey"],
    &["Aleksei", "Alexey", "Alexei"],
    &["Nikolai", "Nikolay"],
    &["Vyacheslav", "Viacheslav"],
    &["Fyodor", "Fedor"],
    &["Pyotr", "Petr"],
    &["Ilya", "Ilia"],
    &["Konstantin", "Konstantine"],
    &["Vladimir", "Wladimir"],
    &["Oleg"],
    &["Igor"],
    &["Viktor", "Victor"],
    &["Maksim", "Maxim"],
    &["Anatoly", "Anatoliy"],
    &["Grigory", "Grigoriy"],
    &["Mikhail", "Mihail"],
    &["Ivan"],
    &["Boris"],
    &["Vadim"],
    &["Gennady", "Gennadiy"],
];
const RU_SUR_A: &[&str] = &[
    "Bel", "Gor", "Zhu", "Kar", "Lav", "Mal", "Nov", "Or", "Pal", "Ras", "Sav", "Tar", "Ust",
    "Fil", "Khar", "Chern", "Yar", "Dem", "Gus", "Zak", "Kol", "Lys", "Mor", "Nest", "Rod", "Sel",
    "Tikh", "Vin", "Bur", "Dor", "Kuz", "Lom", "Prokh", "Shev", "Yer",
];
const RU_SUR_B: &[&str] = &["", "a", "o", "e", "i", "u"];
const RU_SUR_C: &[&str] = &["l", "r", "n", "sh", "t", "k", "ch", "m", "d", "v", "z", "b"];
const RU_SUR_END: &[&str] = &["ov", "ev", "in", "sky", "enko", "yov"];
const RU_SUR_HELD: &[&str] = &[
    "Pyatakov",
    "Quintov",
    "Fomichyov",
    "Ashurkov",
    "Hvostov",
    "Eidelman",
    "Jablokov",
];

const AR_GIVEN: &[&[&str]] = &[
    &["Mohammed", "Muhammad", "Mohamed", "Mohammad"],
    &["Yusuf", "Youssef", "Yousef"],
    &["Hussein", "Husayn", "Hossein"],
    &["Abdulrahman", "Abdelrahman"],
    &["Ahmed", "Ahmad"],
    &["Khaled", "Khalid"],
    &["Omar", "Umar"],
    &["Ali"],
    &["Hassan", "Hasan"],
    &["Mahmoud", "Mahmud"],
    &["Ibrahim", "Ebrahim"],
    &["Mustafa", "Mostafa"],
    &["Abdullah", "Abdallah"],
    &["Tariq", "Tarek"],
    &["Walid", "Waleed"],
    &["Faisal", "Faysal"],
    &["Samir", "Sameer"],
    &["Jamal", "Gamal"],
    &["Osama", "Usama"],
    &["Nasser", "Nasir"],
];
const AR_ROOT: &[&[&str]] = &[
    &["Rashid", "Rasheed"],
    &["Hashimi", "Hashemi"],
    &["Zahrani"],
    &["Qahtani", "Kahtani"],
    &["Masri"],
    &["Tikriti"],
    &["Khatib", "Khateeb"],
    &["Najjar"],
    &["Haddad"],
    &["Sayed", "Sayyid"],
    &["Obeidi", "Ubaydi"],
    &["Jaber", "Jabir"],
    &["Saleh", "Salih"],
    &["Hamdan"],
    &["Kubaisi", "Kubaysi"],
    &["Anbari"],
    &["Dulaimi", "Dulaymi"],
    &["Shami"],
    &["Halabi"],
    &["Baghdadi"],
    &["Darwish", "Darwich"],
    &["Mansour", "Mansur"],
    &["Suleiman", "Sulayman"],
    &["Nuaimi", "Nuaymi"],
];
const AR_ROOT_HELD: &[&str] = &["Quraishi", "Fayyadh", "Zubaidi", "Lahham"];
const AR_CORE: &[&str] = &[
    "Noor", "Amal", "Barakah", "Fajr", "Hilal", "Jazeera", "Khaleej", "Manar", "Najm", "Qamar",
    "Rawda", "Sahara", "Wafa", "Yasmin", "Zahra", "Reem", "Saqr", "Oasis", "Crescent", "Marwa",
    "Bayan", "Diyar", "Ghadeer", "Iktifa", "Lulu", "Nakheel", "Sadaf", "Tharwa", "Ufuq", "Zumurud",
];
const AR_CORE_HELD: &[&str] = &["Dhafra", "Mirfa", "Ruwais", "Liwa"];
const AR_IND: &[&str] = &[
    "General Trading",
    "Electronics Trading",
    "Technical Services",
    "Logistics",
    "Marine Services",
    "Aviation Services",
    "Computer Trading",
    "Industrial Supplies",
];
const AE_FORM: &[&str] = &["LLC", "FZE", "FZCO", "FZ-LLC", "L.L.C."];

const IR_WORD: &[&str] = &[
    "Pars", "Sanat", "Kimia", "Tadbir", "Farayand", "Rahbord", "Pishgam", "Sepehr", "Arman",
    "Behin", "Damavand", "Kavir", "Pouya", "Tavan", "Nasr", "Faraz", "Shahab", "Mehr", "Negin",
    "Aria", "Rayan", "Sina", "Tarh", "Nirou", "Kaveh", "Alborz", "Zagros", "Hirbod", "Part",
    "Abtin",
];
const IR_IND: &[&str] = &[
    "Company",
    "Industrial Group",
    "Engineering Company",
    "Trading Company",
    "Electronic Industries",
    "Research Center",
];
const IR_GIVEN: &[&[&str]] = &[
    &["Hamid Reza", "Hamidreza"],
    &["Mohammad Reza", "Mohammadreza"],
    &["Ali Akbar", "Aliakbar"],
    &["Hossein", "Hosein", "Hussein"],
    &["Mehdi", "Mahdi"],
    &["Reza"],
    &["Javad", "Djavad"],
    &["Mohsen", "Muhsin"],
    &["Saeed", "Said", "Saied"],
    &["Majid", "Madjid"],
    &["Gholam Hossein", "Gholamhossein"],
    &["Masoud", "Masood"],
];
const IR_SUR: &[&str] = &[
    "Mohammadi",
    "Hosseini",
    "Ahmadi",
    "Rezaei",
    "Karimi",
    "Moradi",
    "Jafari",
    "Rahimi",
    "Hashemi",
    "Ebrahimi",
    "Ghorbani",
    "Sadeghi",
    "Ranjbar",
    "Soltani",
    "Kazemi",
    "Shirazi",
    "Tehrani",
    "Nouri",
    "Bagheri",
    "Zarei",
];
const IR_SUR_STEM: &[&str] = &[
    "Amir", "Bahram", "Dehghan", "Esfandi", "Farhad", "Golshan", "Heydar", "Jahan", "Khosrow",
    "Larijan", "Mirza", "Nazar", "Parviz", "Rostam", "Shahr", "Vahid", "Yazdan", "Zand",
];
const IR_SUR_END: &[&str] = &["i", "zadeh", "pour", "nejad", "far", "ian"];

const HK_ADJ: &[&str] = &[
    "Golden", "Oriental", "Pacific", "Grand", "Silver", "Eastern", "Royal", "Ever", "Great",
    "Bright", "Sun", "Star", "Jade", "Dragon", "Phoenix", "Harbour", "Apex", "Prime", "Unity",
    "Victory", "Crystal", "Lucky", "Wealth", "Glory", "Noble",
];
const HK_NOUN: &[&str] = &[
    "Bridge", "Wave", "Field", "Peak", "Gate", "Tide", "Stone", "Light", "Way", "Link", "Rise",
    "Bay", "Crest", "Point", "Ridge", "Ocean", "River", "Summit", "Harvest", "Horizon",
];
const HK_HELD: &[&str] = &["Azure", "Cobalt", "Meadow", "Lantern", "Orchid", "Willow"];
const HK_IND: &[&str] = &[
    "Trading",
    "Electronics",
    "Technology",
    "Logistics",
    "Components",
    "Industrial",
    "Supply Chain",
    "International Trading",
    "Semiconductor",
];
const HK_FORM: &[&str] = &["Limited", "Co., Limited", "Pte. Ltd.", "Ltd"];

const DE_A: &[&str] = &[
    "Nord", "Sued", "Ost", "West", "Rhein", "Elb", "Alpen", "Berg", "Wald", "Stern", "Licht",
    "Kraft", "Stahl", "Feld", "Hansa", "Donau", "Main", "Spree", "Harz", "Eifel",
];
const DE_B: &[&str] = &[
    "licht", "werk", "tech", "kraft", "stern", "feld", "berg", "wind", "strom", "bau", "punkt",
    "blick",
];
const DE_IND: &[&str] = &[
    "Rechenzentrum",
    "Maschinenbau",
    "Elektronik",
    "Systemtechnik",
    "Praezisionsteile",
    "Handelsgesellschaft",
    "Industrietechnik",
];
const DE_FORM: &[&str] = &["GmbH", "GmbH & Co. KG", "AG", "UG"];

/// Legal forms, for "changed legal form" positives and "only the legal form" negatives.
const ANY_FORM: &[&str] = &[
    "Co., Ltd.",
    "Limited",
    "LLC",
    "GmbH",
    "Inc.",
    "JSC",
    "FZE",
    "Pte. Ltd.",
    "Company",
];

// ---------------------------------------------------------------- transliteration

/// Every spelling group a word belongs to (given names and Arabic surname roots).
fn variant_groups() -> Vec<&'static [&'static str]> {
    RU_GIVEN
        .iter()
        .chain(AR_GIVEN)
        .chain(AR_ROOT)
        .chain(IR_GIVEN)
        .copied()
        .filter(|g| g.len() > 1)
        .collect()
}

/// Another romanisation of a Russian surname, by the rules transliteration systems differ on
/// (kh/h, yev/ev, sky/skiy/ski, ts/tz, ya/ia, yu/iu, zh/j).
fn respell_russian(word: &str) -> Option<String> {
    let rules: &[(&str, &str)] = &[
        ("sky", "skiy"),
        ("yov", "ev"),
        ("kh", "h"),
        ("ts", "tz"),
        ("ya", "ia"),
        ("yu", "iu"),
        ("zh", "j"),
        ("ev", "yev"),
        ("enko", "enco"),
        ("ov", "off"),
    ];
    let lower = word.to_lowercase();
    for (from, to) in rules {
        if let Some(i) = lower.rfind(from) {
            if i == 0 {
                continue;
            }
            let mut out = String::new();
            out.push_str(&word[..i]);
            out.push_str(to);
            out.push_str(&word[i + from.len()..]);
            return Some(out);
        }
    }
    None
}

fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------- generation

struct Entry {
    source: &'static str,
    name: String,
    aliases: Vec<String>,
    country: &'static str,
    city: String,
    individual: bool,
    programs: Vec<&'static str>,
}

fn company_source(r: &mut Rng, country: &str) -> &'static str {
    use sources::*;
    let x = r.below(100);
    match country {
        "CN" if x < 12 => CMIC,
        "RU" if x < 15 => SSI,
        "IR" if x < 12 => ISN,
        _ => match x {
            0..=54 => EL,
            55..=69 => SDN,
            70..=77 => MEU,
            78..=87 => UVL,
            88..=93 => FSE,
            _ => DPL,
        },
    }
}

fn person_source(r: &mut Rng) -> &'static str {
    use sources::*;
    match r.below(100) {
        0..=59 => SDN,
        60..=74 => DPL,
        75..=84 => EL,
        85..=92 => DTC,
        _ => FSE,
    }
}

fn cn_core(r: &mut Rng, syl: &[&str]) -> String {
    let a = r.pick(syl);
    let mut b = r.pick(syl);
    while b == a {
        b = r.pick(syl);
    }
    title(&format!("{a}{b}"))
}

fn ru_core(r: &mut Rng, stems: &[&str], ends: &[&str]) -> String {
    format!("{}{}", r.pick(stems), r.pick(ends))
}

fn ru_surname(r: &mut Rng) -> String {
    format!(
        "{}{}{}{}",
        r.pick(RU_SUR_A),
        r.pick(RU_SUR_B),
        r.pick(RU_SUR_C),
        r.pick(RU_SUR_END)
    )
}

fn ir_surname(r: &mut Rng) -> String {
    if r.chance(0.3) {
        r.pick(IR_SUR).to_string()
    } else {
        format!("{}{}", r.pick(IR_SUR_STEM), r.pick(IR_SUR_END))
    }
}

fn company(r: &mut Rng) -> Entry {
    let country = *r.pick(&["CN", "CN", "CN", "RU", "RU", "IR", "AE", "HK", "DE"]);
    let source = company_source(r, country);
    let (name, mut aliases, city): (String, Vec<String>, String) = match country {
        "CN" => {
            let city = r.pick(CN_CITY).to_string();
            let core = cn_core(r, CN_SYL);
            let ind = r.pick(CN_IND);
            let form = r.pick(CN_FORM);
            let mut a = vec![format!("{core} {ind}")];
            if r.chance(0.4) {
                a.push(format!("{city} {core} {}", r.pick(CN_IND)));
            }
            (format!("{city} {core} {ind} {form}"), a, city)
        }
        "RU" => {
            let core = ru_core(r, RU_STEM, RU_END);
            let second = r.pick(RU_SECOND);
            let full = if second.is_empty() {
                core.clone()
            } else {
                format!("{core} {second}")
            };
            let mut a = Vec::new();
            if let Some(v) = respell_russian(&core) {
                if r.chance(0.6) {
                    a.push(format!("{v} LLC"));
                }
            }
            if r.chance(0.5) {
                a.push(format!("{} {full}", r.pick(RU_FORM_LEAD)));
            }
            let city = r
                .pick(&[
                    "Moscow",
                    "Saint Petersburg",
                    "Novosibirsk",
                    "Yekaterinburg",
                    "Kazan",
                ])
                .to_string();
            (format!("{} {full}", r.pick(RU_FORM_LEAD)), a, city)
        }
        "IR" => {
            let a1 = r.pick(IR_WORD);
            let mut a2 = r.pick(IR_WORD);
            while a2 == a1 {
                a2 = r.pick(IR_WORD);
            }
            let ind = r.pick(IR_IND);
            let a = vec![format!("{a1} {a2} Co.")];
            (
                format!("{a1} {a2} {ind}"),
                a,
                r.pick(&["Tehran", "Isfahan", "Shiraz", "Tabriz"])
                    .to_string(),
            )
        }
        "AE" => {
            let core = r.pick(AR_CORE);
            let al = if r.chance(0.6) { "Al " } else { "" };
            let ind = r.pick(AR_IND);
            let form = r.pick(AE_FORM);
            let mut a = Vec::new();
            if !al.is_empty() {
                a.push(format!("Al-{core} {ind}"));
            }
            (
                format!("{al}{core} {} {ind} {form}", r.pick(AR_CORE)),
                a,
                r.pick(&["Dubai", "Sharjah", "Abu Dhabi", "Ajman"])
                    .to_string(),
            )
        }
        "HK" => {
            let adj = r.pick(HK_ADJ);
            let noun = r.pick(HK_NOUN);
            let ind = r.pick(HK_IND);
            let form = r.pick(HK_FORM);
            let a = if r.chance(0.5) {
                vec![format!("{adj} {noun} (HK)")]
            } else {
                vec![]
            };
            (
                format!("{adj} {noun} {ind} {form}"),
                a,
                "Hong Kong".to_string(),
            )
        }
        _ => {
            let core = format!("{}{}", r.pick(DE_A), r.pick(DE_B));
            let ind = r.pick(DE_IND);
            let a = if r.chance(0.5) {
                vec![format!("{core} {ind}")]
            } else {
                vec![]
            };
            (
                format!("{core} {ind} {}", r.pick(DE_FORM)),
                a,
                r.pick(&["Hamburg", "Berlin", "Frankfurt", "Munich"])
                    .to_string(),
            )
        }
    };
    aliases.dedup();
    Entry {
        source,
        name,
        aliases,
        country,
        city,
        individual: false,
        programs: programs(r, source, country),
    }
}

fn person(r: &mut Rng) -> Entry {
    let country = *r.pick(&["RU", "RU", "RU", "AR", "AR", "CN", "IR"]);
    let source = person_source(r);
    let sdn_style = source == sources::SDN || r.chance(0.3);
    // (given, surname, middle, alias given, alias surname)
    let (given, surname, middle, alt_given, alt_surname): (
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = match country {
        "RU" => {
            let g = r.pick(RU_GIVEN);
            let father = r.pick(RU_GIVEN)[0];
            let sur = ru_surname(r);
            let patronymic = if father.ends_with('i') || father.ends_with('y') {
                format!("{}evich", &father[..father.len() - 1])
            } else {
                format!("{father}ovich")
            };
            let alt_g = (g.len() > 1 && r.chance(0.5)).then(|| g[1].to_string());
            let alt_s = respell_russian(&sur).filter(|_| r.chance(0.4));
            (
                g[0].to_string(),
                sur,
                r.chance(0.6).then_some(patronymic),
                alt_g,
                alt_s,
            )
        }
        "AR" => {
            let g = r.pick(AR_GIVEN);
            let root = r.pick(AR_ROOT);
            let father = r.pick(AR_GIVEN)[0];
            let alt_g =
                (g.len() > 1 && r.chance(0.5)).then(|| g[r.below(g.len() - 1) + 1].to_string());
            let alt_s = (root.len() > 1 && r.chance(0.5)).then(|| format!("Al-{}", root[1]));
            (
                g[0].to_string(),
                format!("Al-{}", root[0]),
                r.chance(0.5).then(|| father.to_string()),
                alt_g,
                alt_s,
            )
        }
        "CN" => {
            let (s, wade) = *r.pick(CN_SURNAME);
            let given = cn_core(r, CN_SYL);
            let given = if r.chance(0.4) {
                title(r.pick::<&str>(CN_SYL))
            } else {
                given
            };
            (
                given,
                s.to_string(),
                None,
                None,
                r.chance(0.5).then(|| wade.to_string()),
            )
        }
        _ => {
            let g = r.pick(IR_GIVEN);
            let alt_g = (g.len() > 1 && r.chance(0.5)).then(|| g[1].to_string());
            (g[0].to_string(), ir_surname(r), None, alt_g, None)
        }
    };
    let write = |g: &str, s: &str| -> String {
        let m = middle
            .as_deref()
            .map(|m| format!(" {m}"))
            .unwrap_or_default();
        if sdn_style {
            format!("{}, {g}{m}", s.to_uppercase())
        } else {
            format!("{g}{m} {}", s.to_uppercase())
        }
    };
    let name = write(&given, &surname);
    let mut aliases = Vec::new();
    if alt_given.is_some() || alt_surname.is_some() {
        aliases.push(write(
            alt_given.as_deref().unwrap_or(&given),
            alt_surname.as_deref().unwrap_or(&surname),
        ));
    }
    let city = match country {
        "RU" => "Moscow",
        "AR" => *r.pick(&["Damascus", "Beirut", "Baghdad", "Dubai"]),
        "CN" => *r.pick(&["Beijing", "Hong Kong", "Shenzhen"]),
        _ => "Tehran",
    }
    .to_string();
    let country = match (country, city.as_str()) {
        ("AR", "Damascus") => "SY",
        ("AR", "Beirut") => "LB",
        ("AR", "Baghdad") => "IQ",
        ("AR", _) => "AE",
        ("CN", "Hong Kong") => "HK",
        (c, _) => c,
    };
    Entry {
        source,
        name,
        aliases,
        country,
        city,
        individual: true,
        programs: programs(r, source, country),
    }
}

fn programs(r: &mut Rng, source: &str, country: &str) -> Vec<&'static str> {
    if !source.contains("Treasury") {
        return vec![];
    }
    let p = match country {
        "RU" => "RUSSIA-EO14024",
        "IR" => *r.pick(&["IRAN", "IRAN-EO13902", "NPWMD"]),
        "SY" => "SYRIA",
        "CN" | "HK" => *r.pick(&["CMIC-EO13959", "CYBER2", "NPWMD"]),
        "KP" => "DPRK3",
        _ => *r.pick(&["SDGT", "NPWMD", "IRAN-EO13846"]),
    };
    vec![p]
}

fn source_url(source: &str) -> &'static str {
    if source.contains("Bureau of Industry") {
        "https://www.bis.doc.gov/index.php/policy-guidance/lists-of-parties-of-concern"
    } else if source.contains("Treasury") {
        "https://sanctionslist.ofac.treas.gov/Home/SdnList"
    } else {
        "https://www.state.gov/key-topics-bureau-of-international-security-and-nonproliferation/"
    }
}

/// A CSL JSON file of `n` entries, as trade.gov publishes it (`total`, `sources_used`,
/// `results`), dated `list_date` (YYYY-MM-DD). Deterministic in `seed`.
pub fn generate(n: usize, seed: u64, list_date: &str) -> String {
    let mut r = Rng::new(seed);
    let mut results = Vec::with_capacity(n);
    for i in 0..n {
        let e = if r.chance(0.55) {
            company(&mut r)
        } else {
            person(&mut r)
        };
        let year = 2015 + r.below(11);
        let start = format!("{year}-{:02}-{:02}", 1 + r.below(12), 1 + r.below(28));
        let treasury = e.source.contains("Treasury");
        let entity_number = treasury.then(|| 10_000 + i as u64);
        let ids: Vec<Value> = if e.individual && r.chance(0.5) {
            vec![
                json!({"type": "Passport", "number": format!("{:09}", r.next_u64() % 1_000_000_000), "country": e.country, "issue_date": null, "expiration_date": null}),
            ]
        } else {
            vec![]
        };
        results.push(json!({
            "id": format!("{:016x}{:08x}", r.next_u64(), i),
            "source": e.source,
            "entity_number": entity_number,
            "type": if e.individual { "Individual" } else { "Entity" },
            "programs": e.programs,
            "name": e.name,
            "title": null,
            "addresses": [{
                "address": format!("{} {}", 1 + r.below(300), r.pick(&["Industrial Road", "Central Avenue", "Science Park", "Trade Street"])),
                "city": e.city,
                "state": null,
                "postal_code": format!("{:05}", r.below(100_000)),
                "country": e.country,
            }],
            "federal_register_notice": (!treasury).then(|| format!("{} FR {}", year - 1935, 1000 + r.below(90_000))),
            "start_date": start,
            "end_date": (e.source == sources::DPL).then(|| format!("{}-01-01", year + 10)),
            "standard_order": null,
            "license_requirement": (e.source == sources::EL).then_some("For all items subject to the EAR."),
            "license_policy": (e.source == sources::EL).then_some("Presumption of denial."),
            "call_sign": null, "vessel_type": null, "gross_tonnage": null,
            "gross_registered_tonnage": null, "vessel_flag": null, "vessel_owner": null,
            "remarks": null,
            "source_list_url": source_url(e.source),
            "alt_names": e.aliases,
            "citizenships": [], "dates_of_birth": [], "places_of_birth": [], "nationalities": [],
            "source_information_url": source_url(e.source),
            "ids": ids,
        }));
    }
    let all = [
        sources::EL,
        sources::DPL,
        sources::MEU,
        sources::UVL,
        sources::SDN,
        sources::FSE,
        sources::SSI,
        sources::CMIC,
        sources::ISN,
        sources::DTC,
    ];
    let used: Vec<Value> = all
        .iter()
        .map(|s| json!({"source": s, "source_last_updated": format!("{list_date}T05:00:00-05:00"), "import_rate": "Hourly"}))
        .collect();
    serde_json::to_string(&json!({"total": n, "sources_used": used, "results": results}))
        .expect("plain JSON")
}

// ---------------------------------------------------------------- the labelled set

/// A query with what screening should say of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labelled {
    /// The name screened.
    pub query: String,
    /// Whether it should be flagged (denied or held): it names a listed party.
    pub listed: bool,
    /// How it was made: "transliteration", "word order", "legal form", "typo", "two typos",
    /// "patronymic dropped"; "unrelated", "legal form only", "common word", "given name only",
    /// "surname only".
    pub kind: &'static str,
    /// For a positive, the listed name or alias it was made from.
    pub from: Option<String>,
}

fn words(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// A typo: one character substituted, dropped, inserted or two swapped, not in the first
/// two characters of the word (people mistype less there).
fn typo(r: &mut Rng, w: &str) -> String {
    let c: Vec<char> = w.chars().collect();
    if c.len() < 4 {
        return w.to_string();
    }
    let i = 2 + r.below(c.len() - 2);
    let letters: Vec<char> = "abcdefghiklmnoprstuvyz".chars().collect();
    let mut out = c.clone();
    match r.below(4) {
        0 => {
            let mut x = *r.pick(&letters);
            while x.eq_ignore_ascii_case(&c[i]) {
                x = *r.pick(&letters);
            }
            out[i] = x;
        }
        1 => {
            out.remove(i);
        }
        2 => out.insert(i, *r.pick(&letters)),
        _ if i + 1 < c.len() && c[i] != c[i + 1] => out.swap(i, i + 1),
        _ => {
            out.remove(i);
        }
    }
    out.into_iter().collect()
}

/// Builds the labelled set from a CSL file made by [`generate`]: up to `per_kind` queries of
/// each kind. Positives come from the listed names and aliases; negatives from words the
/// generator never lists (held-out syllables, stems and surnames), plus one shared legal form,
/// city, industry word or given name. Deterministic in `seed`.
pub fn labelled(csl_json: &str, per_kind: usize, seed: u64) -> Vec<Labelled> {
    let v: Value = serde_json::from_str(csl_json).expect("a CSL file");
    let entries = v["results"].as_array().expect("results");
    let mut r = Rng::new(seed);
    let groups = variant_groups();
    let mut out = Vec::new();
    let strs = |e: &Value| -> Vec<String> {
        std::iter::once(e["name"].as_str().unwrap_or("").to_string())
            .chain(
                e["alt_names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str().map(str::to_string)),
            )
            .collect()
    };
    let lower_key = |s: &str| -> String {
        s.to_lowercase()
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect::<String>()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let push = |out: &mut Vec<Labelled>, q: String, listed: bool, kind, from: Option<String>| {
        out.push(Labelled {
            query: q,
            listed,
            kind,
            from,
        })
    };
    let mut count = std::collections::BTreeMap::<&str, usize>::new();
    let mut tries = 0;
    while tries < per_kind * 400 {
        tries += 1;
        let e = &entries[r.below(entries.len())];
        let names = strs(e);
        let name = names[r.below(names.len())].clone();
        let individual = e["type"] == "Individual";
        let ws = words(&name);
        let own: Vec<String> = names.iter().map(|n| lower_key(n)).collect();
        let kind: &'static str = r.pick::<&'static str>(&[
            "transliteration",
            "word order",
            "legal form",
            "typo",
            "two typos",
            "patronymic dropped",
        ]);
        if count.get(kind).copied().unwrap_or(0) >= per_kind {
            continue;
        }
        let q: Option<String> = match kind {
            "transliteration" => {
                // A word of the name spelled another way: a given-name group, an Arabic root,
                // a Pinyin/Wade-Giles pair or a Russian romanisation rule.
                let mut found = None;
                for (i, w) in ws.iter().enumerate() {
                    let bare = w.trim_end_matches(',');
                    let comma = if bare.len() < w.len() { "," } else { "" };
                    let (pre, core) = bare
                        .strip_prefix("AL-")
                        .map(|c| ("AL-", c))
                        .or_else(|| bare.strip_prefix("Al-").map(|c| ("Al-", c)))
                        .unwrap_or(("", bare));
                    let alt = groups
                        .iter()
                        .find(|g| g.iter().any(|x| x.eq_ignore_ascii_case(core)))
                        .and_then(|g| {
                            let others: Vec<&&str> =
                                g.iter().filter(|x| !x.eq_ignore_ascii_case(core)).collect();
                            (!others.is_empty()).then(|| others[r.below(others.len())].to_string())
                        })
                        .or_else(|| {
                            CN_SURNAME
                                .iter()
                                .find(|(p, _)| p.eq_ignore_ascii_case(core))
                                .map(|(_, w)| w.to_string())
                        })
                        .or_else(|| {
                            (individual && e["addresses"][0]["country"] == "RU")
                                .then(|| respell_russian(&title(&core.to_lowercase())))
                                .flatten()
                        });
                    if let Some(a) = alt {
                        let mut q: Vec<String> = ws.iter().map(|s| s.to_string()).collect();
                        q[i] = format!("{pre}{a}{comma}");
                        found = Some(q.join(" "));
                        break;
                    }
                }
                found
            }
            "word order" if ws.len() >= 2 => {
                let mut q: Vec<String> = ws
                    .iter()
                    .map(|w| w.trim_end_matches(',').to_string())
                    .collect();
                if individual && name.contains(',') {
                    // "SURNAME, Given Middle" read back as "Middle Given SURNAME".
                    q.reverse();
                } else {
                    let k = 1 + r.below(q.len() - 1);
                    q.swap(0, k);
                }
                Some(q.join(" "))
            }
            "legal form" if !individual => {
                // The name without its legal form (leading or trailing), and maybe another one.
                let base = ws
                    .iter()
                    .filter(|w| !RU_FORM_LEAD.contains(w))
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ");
                let base = CN_FORM
                    .iter()
                    .chain(HK_FORM)
                    .chain(AE_FORM)
                    .chain(DE_FORM)
                    .fold(base, |b, f| {
                        b.strip_suffix(f).map(|x| x.trim().to_string()).unwrap_or(b)
                    });
                Some(if r.chance(0.5) {
                    base
                } else {
                    format!("{base} {}", r.pick(ANY_FORM))
                })
            }
            "typo" | "two typos" => {
                let long: Vec<usize> = (0..ws.len())
                    .filter(|&i| ws[i].trim_end_matches(',').chars().count() >= 5)
                    .collect();
                (!long.is_empty()).then(|| {
                    let mut q: Vec<String> = ws.iter().map(|s| s.to_string()).collect();
                    let n = if kind == "typo" { 1 } else { 2 };
                    for _ in 0..n {
                        let i = long[r.below(long.len())];
                        let bare = q[i].trim_end_matches(',').to_string();
                        let comma = if q[i].ends_with(',') { "," } else { "" };
                        q[i] = format!("{}{comma}", typo(&mut r, &bare));
                    }
                    q.join(" ")
                })
            }
            "patronymic dropped" if individual => {
                let w: Vec<&str> = ws
                    .iter()
                    .copied()
                    .filter(|w| !(w.ends_with("ovich") || w.ends_with("evich")))
                    .collect();
                (w.len() < ws.len() && w.len() >= 2).then(|| w.join(" "))
            }
            _ => None,
        };
        let Some(q) = q else { continue };
        // A query spelled exactly like one of the party's names is still a positive, but it
        // does not test what its kind says: skip it (legal forms excepted: that is the point).
        if kind != "legal form" && own.contains(&lower_key(&q)) {
            continue;
        }
        if lower_key(&q).is_empty() {
            continue;
        }
        *count.entry(kind).or_default() += 1;
        push(&mut out, q, true, kind, Some(name));
    }
    // Negatives.
    let mut neg =
        |out: &mut Vec<Labelled>, kind: &'static str, make: &mut dyn FnMut(&mut Rng) -> String| {
            for _ in 0..per_kind {
                let q = make(&mut r);
                push(out, q, false, kind, None);
            }
        };
    neg(&mut out, "unrelated", &mut |r| match r.below(4) {
        0 => format!(
            "{} {} {}",
            cn_core(r, CN_SYL_HELD),
            r.pick(&["Biotech", "Garments", "Furniture", "Ceramics"]),
            r.pick(CN_FORM)
        ),
        1 => format!(
            "{} {}",
            r.pick(RU_FORM_LEAD),
            ru_core(r, RU_STEM_HELD, RU_END_HELD)
        ),
        2 => format!(
            "{} {}",
            r.pick(&["Anna", "Maria", "Peter", "Julia", "Thomas", "Laura"]),
            r.pick(RU_SUR_HELD)
        ),
        _ => format!(
            "{} {} Trading {}",
            r.pick(HK_HELD),
            r.pick(HK_HELD),
            r.pick(HK_FORM)
        ),
    });
    neg(&mut out, "legal form only", &mut |r| {
        format!(
            "{} {} {}",
            r.pick(HK_HELD),
            cn_core(r, CN_SYL_HELD),
            r.pick(ANY_FORM)
        )
    });
    neg(&mut out, "common word", &mut |r| match r.below(4) {
        0 => format!(
            "{} {} {} {}",
            r.pick(CN_CITY),
            cn_core(r, CN_SYL_HELD),
            r.pick(CN_IND),
            r.pick(CN_FORM)
        ),
        1 => format!("{} {} {}", r.pick(HK_HELD), r.pick(HK_NOUN), r.pick(HK_IND)),
        2 => format!(
            "Al {} {} {}",
            r.pick(AR_CORE_HELD),
            r.pick(AR_IND),
            r.pick(AE_FORM)
        ),
        _ => format!(
            "{}{} {} GmbH",
            r.pick(HK_HELD),
            r.pick(DE_B),
            r.pick(DE_IND)
        ),
    });
    neg(&mut out, "given name only", &mut |r| match r.below(3) {
        0 => format!("{} {}", r.pick(RU_GIVEN)[0], r.pick(RU_SUR_HELD)),
        1 => format!("{} Al-{}", r.pick(AR_GIVEN)[0], r.pick(AR_ROOT_HELD)),
        _ => format!(
            "{} {}",
            r.pick(IR_GIVEN)[0],
            r.pick(&["Qasemlou", "Vafadar", "Ilkhani"])
        ),
    });
    neg(&mut out, "surname only", &mut |r| match r.below(2) {
        0 => format!(
            "{} {}",
            r.pick(&["Anna", "Peter", "Laura", "Thomas"]),
            ru_surname(r).to_uppercase()
        ),
        _ => format!(
            "{} Al-{}",
            r.pick(&["Karim", "Rami", "Fadi", "Nabil"]),
            r.pick(AR_ROOT)[0]
        ),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_shaped_like_the_csl() {
        let a = generate(300, 7, "2026-11-30");
        assert_eq!(a, generate(300, 7, "2026-11-30"));
        assert_ne!(a, generate(300, 8, "2026-11-30"));
        let v: Value = serde_json::from_str(&a).unwrap();
        assert_eq!(v["total"], 300);
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 300);
        for e in results {
            for f in [
                "id",
                "source",
                "name",
                "type",
                "addresses",
                "alt_names",
                "programs",
            ] {
                assert!(!e[f].is_null(), "{f} in {e}");
            }
        }
        let persons = results.iter().filter(|e| e["type"] == "Individual").count();
        assert!(persons > 60 && persons < 240, "{persons}");
        assert!(v["sources_used"][0]["source_last_updated"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-30"));
    }

    #[test]
    fn the_labelled_set_has_every_kind_both_ways() {
        let csl = generate(2000, 1, "2026-11-30");
        let set = labelled(&csl, 20, 2);
        let kinds: std::collections::BTreeSet<(&str, bool)> =
            set.iter().map(|l| (l.kind, l.listed)).collect();
        for k in [
            "transliteration",
            "word order",
            "legal form",
            "typo",
            "two typos",
            "patronymic dropped",
        ] {
            assert!(kinds.contains(&(k, true)), "{k}: {kinds:?}");
        }
        for k in [
            "unrelated",
            "legal form only",
            "common word",
            "given name only",
            "surname only",
        ] {
            assert!(kinds.contains(&(k, false)), "{k}");
        }
        assert!(set.iter().all(|l| l.listed == l.from.is_some()));
    }
}
