//! Restricted-party screening against the US Consolidated Screening List (CSL).
//!
//! Three things live here: [`import_csl`], which reads the CSL JSON that trade.gov publishes
//! (the search API's answer or the downloadable `consolidated.json`) into a [`ScreeningList`];
//! the vault's stored form of that list (`policies/screening-list.json`) and the matcher's
//! settings (`policies/screening.toml`); and [`ScreeningIndex`], which answers "does this name
//! match a listed party?" through an index (word postings, one-deletion neighbourhoods for
//! typos, Double Metaphone keys for transliterations), never by scanning the list.
//!
//! Pure: text in, values out. It never reads a file, never fetches the list, and never decides
//! a release on its own: `checks::restricted_parties` turns hits into a verdict. A fuzzy match
//! only ever holds a request for review; only an exact match (after [`normalise`]) may deny,
//! and only when the configuration says that source denies.

use crate::data::{Ctx, PolicyError, RestrictedParties};
use crate::names::{is_legal_form, is_mistyped_legal_form, normalise};
use rphonetic::{DoubleMetaphone, Encoder};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use time::Date;
use toml::Spanned;

// ---------------------------------------------------------------- the list

/// One party on the list, as the vault keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedParty {
    /// The CSL's `source`, in full ("Entity List (EL) - Bureau of Industry and Security").
    pub source: String,
    /// The list's short code from `source` ("EL", "DPL", "MEU", "UVL", "SDN", ...): what
    /// `screening.toml` names to say whether the list denies or holds for review.
    pub code: String,
    /// Name as listed.
    pub name: String,
    /// Every alias (`alt_names`), as listed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// Countries of its addresses, as listed (usually ISO 3166-1 alpha-2; not always).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub countries: Vec<String>,
    /// Sanctions or control programmes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<String>,
    /// First day of the listing, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_date: Option<String>,
    /// Last day of the listing, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_date: Option<String>,
    /// Identity or registration documents ("Passport 123 (RU)").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// The number the originating list gives it (unique only within that list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity_number: Option<String>,
    /// Individual, Entity, Vessel or Aircraft, when given.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The CSL's own record id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl ListedParty {
    /// The list's name without its code and agency: "Entity List", "Unverified List".
    pub fn list_name(&self) -> &str {
        self.source
            .split_once(" (")
            .map_or(self.source.as_str(), |(n, _)| n)
            .trim()
    }

    /// The name (0) or alias `k` (k >= 1).
    fn name_or_alias(&self, k: usize) -> &str {
        if k == 0 {
            &self.name
        } else {
            &self.aliases[k - 1]
        }
    }
}

/// One source list the CSL was built from, with its date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceUsed {
    /// The source, in full.
    pub source: String,
    /// When the CSL last took it from its agency, as given (`source_last_updated`, or
    /// `last_imported`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated: Option<String>,
}

/// The screening list: every party of a CSL file, and the list's date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScreeningList {
    /// The day the list is as of: the newest date in `sources_used`, or given on import.
    pub list_date: Option<Date>,
    /// The sources the file names in `sources_used`.
    pub sources: Vec<SourceUsed>,
    /// Every party, in the file's order.
    pub parties: Vec<ListedParty>,
}

/// Why a CSL file could not be imported, or a list not stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CslError {
    /// Not JSON at all.
    #[error("not JSON (line {line}, column {column}): {message}")]
    Json {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What the parser said.
        message: String,
    },
    /// JSON, but not the CSL's shape.
    #[error("not a Consolidated Screening List: {0}")]
    Shape(String),
    /// One entry of `results` lacks a field it needs or has one of the wrong kind.
    #[error("results[{index}].{field}: {problem}")]
    Entry {
        /// 0-based index in `results`.
        index: usize,
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// One entry of `sources_used` is unusable.
    #[error("sources_used[{index}].{field}: {problem}")]
    Source {
        /// 0-based index in `sources_used`.
        index: usize,
        /// The field.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// Nothing says what day the list is as of.
    #[error("the file has no date in sources_used (source_last_updated or last_imported): give the list's date (--list-date YYYY-MM-DD)")]
    NoListDate,
}

/// Reads the CSL's JSON (`{"total": N, "sources_used": [...], "results": [...]}`). Tolerant
/// of fields it does not use; strict about `name` and `source` (every party needs both) and
/// about the kind of every field it keeps. Errors name the entry's index and the field.
pub fn import_csl(json: &str) -> Result<ScreeningList, CslError> {
    let top: Value = serde_json::from_str(json).map_err(|e| CslError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let Value::Object(top) = top else {
        return Err(CslError::Shape(
            "the top level is not an object with \"results\"".into(),
        ));
    };
    let results = match top.get("results") {
        Some(Value::Array(a)) => a,
        Some(_) => return Err(CslError::Shape("\"results\" is not an array".into())),
        None => return Err(CslError::Shape("no \"results\" array".into())),
    };
    let mut sources = Vec::new();
    let mut list_date: Option<Date> = None;
    match top.get("sources_used") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for (index, s) in a.iter().enumerate() {
                let bad = |field: &str, problem: String| CslError::Source {
                    index,
                    field: field.into(),
                    problem,
                };
                let Value::Object(s) = s else {
                    return Err(bad("", "not an object".into()));
                };
                let source = opt_str(s, "source").map_err(|p| bad("source", p))?;
                let mut updated = None;
                for field in ["source_last_updated", "last_imported"] {
                    if let Some(u) = opt_str(s, field).map_err(|p| bad(field, p))? {
                        let d = leading_date(&u).ok_or_else(|| {
                            bad(
                                field,
                                format!("'{u}' does not start with a date YYYY-MM-DD"),
                            )
                        })?;
                        list_date = list_date.max(Some(d));
                        updated.get_or_insert(u);
                    }
                }
                if let Some(source) = source {
                    sources.push(SourceUsed { source, updated });
                }
            }
        }
        Some(_) => return Err(CslError::Shape("\"sources_used\" is not an array".into())),
    }
    let parties = results
        .iter()
        .enumerate()
        .map(|(i, e)| party(i, e))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ScreeningList {
        list_date,
        sources,
        parties,
    })
}

fn party(index: usize, e: &Value) -> Result<ListedParty, CslError> {
    let bad = |field: &str, problem: String| CslError::Entry {
        index,
        field: field.into(),
        problem,
    };
    let Value::Object(e) = e else {
        return Err(bad("", "not an object".into()));
    };
    let need = |field: &str| -> Result<String, CslError> {
        opt_str(e, field)
            .map_err(|p| bad(field, p))?
            .ok_or_else(|| bad(field, "missing or empty: every party needs it".into()))
    };
    let name = need("name")?;
    if normalise(&name).is_empty() {
        return Err(bad(
            "name",
            format!("'{name}' has no letters or digits to screen by"),
        ));
    }
    let source = need("source")?;
    let mut aliases = Vec::new();
    match e.get("alt_names") {
        None | Some(Value::Null) => {}
        // The CSV form joins aliases with "; "; some JSON entries do too.
        Some(Value::String(s)) => aliases.extend(split_aliases(s)),
        Some(Value::Array(a)) => {
            for (k, v) in a.iter().enumerate() {
                match v {
                    Value::String(s) => aliases.extend(split_aliases(s)),
                    Value::Null => {}
                    other => {
                        return Err(bad(
                            &format!("alt_names[{k}]"),
                            format!("expected a string, found {}", kind(other)),
                        ))
                    }
                }
            }
        }
        Some(other) => {
            return Err(bad(
                "alt_names",
                format!("expected an array of strings, found {}", kind(other)),
            ))
        }
    }
    aliases.retain(|a| !normalise(a).is_empty());
    let mut countries: Vec<String> = Vec::new();
    for (k, a) in array(e, "addresses")
        .map_err(|p| bad("addresses", p))?
        .iter()
        .enumerate()
    {
        let field = format!("addresses[{k}]");
        let Value::Object(a) = a else {
            return Err(bad(
                &field,
                format!("expected an object, found {}", kind(a)),
            ));
        };
        if let Some(c) = opt_str(a, "country").map_err(|p| bad(&format!("{field}.country"), p))? {
            if !countries.contains(&c) {
                countries.push(c);
            }
        }
    }
    let programs = strings(e, "programs").map_err(|p| bad("programs", p))?;
    let mut ids = Vec::new();
    for (k, v) in array(e, "ids")
        .map_err(|p| bad("ids", p))?
        .iter()
        .enumerate()
    {
        let field = format!("ids[{k}]");
        match v {
            Value::Object(o) => {
                let part = |f: &str| opt_str(o, f).map_err(|p| bad(&format!("{field}.{f}"), p));
                let text = [part("type")?, part("number")?]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join(" ");
                let text = match part("country")? {
                    Some(c) if !text.is_empty() => format!("{text} ({c})"),
                    _ => text,
                };
                if !text.is_empty() {
                    ids.push(text);
                }
            }
            Value::String(s) if !s.trim().is_empty() => ids.push(s.trim().to_string()),
            Value::Null | Value::String(_) => {}
            other => {
                return Err(bad(
                    &field,
                    format!("expected an object, found {}", kind(other)),
                ))
            }
        }
    }
    let entity_number = match e.get("entity_number") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(Value::String(s)) => Some(s.trim().to_string()).filter(|s| !s.is_empty()),
        Some(other) => {
            return Err(bad(
                "entity_number",
                format!("expected a number or string, found {}", kind(other)),
            ))
        }
    };
    Ok(ListedParty {
        code: source_code(&source),
        source,
        name,
        aliases,
        countries,
        programs,
        start_date: opt_str(e, "start_date").map_err(|p| bad("start_date", p))?,
        end_date: opt_str(e, "end_date").map_err(|p| bad("end_date", p))?,
        ids,
        entity_number,
        kind: opt_str(e, "type").map_err(|p| bad("type", p))?,
        id: opt_str(e, "id").map_err(|p| bad("id", p))?,
    })
}

/// The short code in a CSL source: the text in its first parentheses, less a trailing
/// " List" ("Non-SDN Menu-Based Sanctions List (NS-MBS List) - Treasury Department" is
/// NS-MBS). A source without one is its own code (and `other_sources` applies to it).
pub fn source_code(source: &str) -> String {
    let inner = source
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(code, _)| code.trim())
        .filter(|c| !c.is_empty());
    match inner {
        Some(c) => c.strip_suffix(" List").unwrap_or(c).trim().to_uppercase(),
        None => source.trim().to_string(),
    }
}

fn split_aliases(s: &str) -> impl Iterator<Item = String> + '_ {
    s.split("; ")
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(str::to_string)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string field: missing, null and blank are `None`.
fn opt_str(o: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Some(other) => Err(format!("expected a string, found {}", kind(other))),
    }
}

fn array<'a>(o: &'a Map<String, Value>, field: &str) -> Result<&'a [Value], String> {
    match o.get(field) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(format!("expected an array, found {}", kind(other))),
    }
}

fn strings(o: &Map<String, Value>, field: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (k, v) in array(o, field)?.iter().enumerate() {
        match v {
            Value::String(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
            Value::String(_) | Value::Null => {}
            other => return Err(format!("[{k}]: expected a string, found {}", kind(other))),
        }
    }
    Ok(out)
}

/// The date at the start of `s` ("2026-11-30", "2026-11-30T05:00:00+00:00").
fn leading_date(s: &str) -> Option<Date> {
    parse_date(s.get(..10)?)
}

fn parse_date(s: &str) -> Option<Date> {
    Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")).ok()
}

/// The stored form's first line: what the file is.
const STORED_FORMAT: &str = "weightvault-screening-list/1";

#[derive(Serialize)]
struct StoredHead<'a> {
    format: &'a str,
    list_date: String,
    sources: &'a [SourceUsed],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stored {
    format: String,
    list_date: String,
    #[serde(default)]
    sources: Vec<SourceUsed>,
    parties: Vec<ListedParty>,
}

impl ScreeningList {
    /// The vault's stored form (`screening-list.json`): JSON, one party per line.
    ///
    /// JSON and not CSV: a party has several aliases, countries, programmes and ids, and the
    /// CSL's own CSV joins such values with "; ", which is ambiguous (a name may contain it)
    /// and loses which value was which. JSON keeps every list a list, and parses faster than
    /// the CSV would need to be split again.
    pub fn to_stored(&self) -> Result<String, CslError> {
        let date = self.list_date.ok_or(CslError::NoListDate)?;
        let head = serde_json::to_string(&StoredHead {
            format: STORED_FORMAT,
            list_date: date.to_string(),
            sources: &self.sources,
        })
        .expect("plain data serialises");
        let mut out = String::with_capacity(256 * self.parties.len() + head.len());
        out.push_str(&head[..head.len() - 1]);
        out.push_str(",\"parties\":[\n");
        for (i, p) in self.parties.iter().enumerate() {
            if i > 0 {
                out.push_str(",\n");
            }
            out.push_str(&serde_json::to_string(p).expect("plain data serialises"));
        }
        out.push_str("\n]}\n");
        Ok(out)
    }

    /// Reads the stored form (`screening-list.json`), with the line of any problem.
    pub fn from_stored(text: &str) -> Result<Self, PolicyError> {
        Self::parse_stored(&Ctx {
            file: "screening-list.json",
            text,
        })
    }

    /// Reads the stored form, with the line of any problem.
    pub(crate) fn parse_stored(ctx: &Ctx<'_>) -> Result<Self, PolicyError> {
        let s: Stored = serde_json::from_str(ctx.text).map_err(|e| PolicyError {
            file: ctx.file.into(),
            line: e.line(),
            message: format!(
                "{e} (write this file with `weightvault policy import-csl`, not by hand)"
            ),
        })?;
        if s.format != STORED_FORMAT {
            return Err(ctx.err(
                0,
                format!(
                    "format '{}' is not {STORED_FORMAT}: import the list again with `weightvault policy import-csl`",
                    s.format
                ),
            ));
        }
        let list_date = parse_date(&s.list_date).ok_or_else(|| {
            ctx.err(
                0,
                format!("list_date '{}' is not a date YYYY-MM-DD", s.list_date),
            )
        })?;
        for (i, p) in s.parties.iter().enumerate() {
            // Line i + 2: the head is line 1, one party a line after it.
            let at = |m: String| PolicyError {
                file: ctx.file.into(),
                line: i + 2,
                message: m,
            };
            if normalise(&p.name).is_empty() {
                return Err(at(format!("party {i}: name '{}' is empty", p.name)));
            }
            if p.code.is_empty() || p.source.is_empty() {
                return Err(at(format!("party {i} ({}): no source or code", p.name)));
            }
        }
        Ok(Self {
            list_date: Some(list_date),
            sources: s.sources,
            parties: s.parties,
        })
    }
}

// ---------------------------------------------------------------- configuration

/// What a hit on a list leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScreenAction {
    /// Held for a compliance officer.
    Review,
    /// The release is denied.
    Deny,
}

impl ScreenAction {
    /// `review` or `deny`.
    pub fn name(self) -> &'static str {
        match self {
            ScreenAction::Review => "review",
            ScreenAction::Deny => "deny",
        }
    }
}

/// `policies/screening.toml`: which lists deny and which hold for review, and how close a
/// fuzzy match must be. Every number is data, never a constant in code.
#[derive(Debug, Clone, PartialEq)]
pub struct ScreeningConfig {
    /// Action on an exact match, by source code.
    pub sources: BTreeMap<String, ScreenAction>,
    /// Action on an exact match for a code not in `sources`.
    pub other_sources: ScreenAction,
    /// A fuzzy match at or above this score is held for review.
    pub threshold: f64,
    /// Two words less similar than this (Jaro-Winkler) do not match at all.
    pub word_floor: f64,
    /// The similarity given to two words with the same Double Metaphone key (transliterations
    /// such as Mohammed and Muhammad), when Jaro-Winkler says less.
    pub phonetic_similarity: f64,
    /// Words with the same key get `phonetic_similarity` only if Jaro-Winkler gives them at
    /// least this: a short key ("RS") is shared by unrelated words (Ruwais, Reza).
    pub phonetic_floor: f64,
    /// How much a listed word the name lacks counts against a match (a listed patronymic or
    /// trailing industry word), relative to a word of the name the listing lacks (1.0).
    pub missing_listed_word_weight: f64,
    /// A word in more listed names than this finds no candidates by itself (it still counts
    /// in the score, by its rarity).
    pub common_word_names: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    sources: BTreeMap<String, Spanned<String>>,
    other_sources: Spanned<String>,
    fuzzy: FuzzyFile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FuzzyFile {
    threshold: Spanned<f64>,
    word_floor: Spanned<f64>,
    phonetic_similarity: Spanned<f64>,
    phonetic_floor: Spanned<f64>,
    missing_listed_word_weight: Spanned<f64>,
    common_word_names: Spanned<i64>,
}

impl ScreeningConfig {
    /// Reads `screening.toml`, with the line of any problem.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        Self::parse(&Ctx {
            file: "screening.toml",
            text,
        })
    }

    pub(crate) fn parse(ctx: &Ctx<'_>) -> Result<Self, PolicyError> {
        let f: ConfigFile = toml::from_str(ctx.text).map_err(|e| {
            ctx.err(
                e.span().map(|s| s.start).unwrap_or(0),
                e.message().trim().to_string(),
            )
        })?;
        let action = |s: &Spanned<String>| match s.get_ref().as_str() {
            "deny" => Ok(ScreenAction::Deny),
            "review" => Ok(ScreenAction::Review),
            other => Err(ctx.at(
                s,
                format!("'{other}' is not an action: use \"deny\" or \"review\""),
            )),
        };
        let mut sources = BTreeMap::new();
        for (code, a) in &f.sources {
            if code.is_empty() || code.trim() != code || code.to_uppercase() != *code {
                return Err(ctx.at(
                    a,
                    format!("source code '{code}': use the code in the CSL's source in capitals, e.g. EL, DPL, UVL, SDN"),
                ));
            }
            sources.insert(code.clone(), action(a)?);
        }
        let unit = |s: &Spanned<f64>, what: &str| -> Result<f64, PolicyError> {
            let v = *s.get_ref();
            if v > 0.0 && v <= 1.0 {
                Ok(v)
            } else {
                Err(ctx.at(s, format!("{what} must be above 0 and at most 1, not {v}")))
            }
        };
        let z = &f.fuzzy;
        let names = *z.common_word_names.get_ref();
        if names < 1 {
            return Err(ctx.at(
                &z.common_word_names,
                format!("common_word_names must be at least 1, not {names}"),
            ));
        }
        let c = Self {
            sources,
            other_sources: action(&f.other_sources)?,
            threshold: unit(&z.threshold, "threshold")?,
            word_floor: unit(&z.word_floor, "word_floor")?,
            phonetic_similarity: unit(&z.phonetic_similarity, "phonetic_similarity")?,
            phonetic_floor: unit(&z.phonetic_floor, "phonetic_floor")?,
            missing_listed_word_weight: unit(
                &z.missing_listed_word_weight,
                "missing_listed_word_weight",
            )?,
            common_word_names: names as usize,
        };
        if c.phonetic_similarity < c.word_floor {
            return Err(ctx.at(
                &z.phonetic_similarity,
                "phonetic_similarity below word_floor would never let a transliteration match",
            ));
        }
        Ok(c)
    }

    /// The action on an exact match with a party of list `code`.
    pub fn exact_action(&self, code: &str) -> ScreenAction {
        self.sources
            .get(code)
            .copied()
            .unwrap_or(self.other_sources)
    }
}

// ---------------------------------------------------------------- the index

/// How a name matched a listed party.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MatchKind {
    /// Equal after [`normalise`].
    Exact,
    /// Close: the score (0..=1) reached the threshold.
    Fuzzy {
        /// The score.
        score: f64,
        /// The threshold it reached.
        threshold: f64,
    },
}

/// A listed party a name matched.
#[derive(Debug, Clone, PartialEq)]
pub struct ScreenHit<'a> {
    /// The party.
    pub party: &'a ListedParty,
    /// Which of its names matched: 0 its name, k its alias k (1-based).
    pub alias: usize,
    /// Exact or fuzzy.
    pub kind: MatchKind,
    /// Deny or review.
    pub action: ScreenAction,
    /// Where the party comes from: "CSL of 2026-11-30", or "hand-entered list".
    pub provenance: String,
}

impl ScreenHit<'_> {
    /// The name or alias that matched, as listed.
    pub fn matched(&self) -> &str {
        self.party.name_or_alias(self.alias)
    }

    /// One sentence: "organisation X matches alias 'Y' of Z (Entity List, CSL of
    /// 2026-11-30) exactly: deny".
    pub fn sentence(&self, role: &str, name: &str) -> String {
        let what = if self.alias == 0 {
            format!("'{}'", self.party.name)
        } else {
            format!("alias '{}' of {}", self.matched(), self.party.name)
        };
        let how = match self.kind {
            MatchKind::Exact => "exactly".to_string(),
            MatchKind::Fuzzy { score, threshold } => {
                format!("fuzzy {score:.2} >= {threshold:.2}")
            }
        };
        format!(
            "{role} {name} matches {what} ({}, {}) {how}: {}",
            self.party.list_name(),
            self.provenance,
            self.action.name()
        )
    }
}

/// A listed name or alias, by the words of its normalised form.
#[derive(Debug, Clone)]
struct IndexedName {
    party: u32,
    alias: u32,
    words: std::ops::Range<u32>,
    /// Sum of its words' weights.
    weight: f32,
}

/// The list (and the hand-entered `restricted-parties.csv`) indexed for screening: exact
/// lookup of normalised names, word postings, one-deletion neighbourhoods of every word (a
/// typo is found by a shared deletion, as in SymSpell) and Double Metaphone keys (a
/// transliteration is found by a shared key). A query looks up its own words only; it never
/// visits every party.
pub struct ScreeningIndex {
    config: ScreeningConfig,
    list_date: Option<Date>,
    parties: Vec<ListedParty>,
    /// Parties from index `csl_parties` on are hand-entered (they deny on an exact match).
    csl_parties: usize,
    names: Vec<IndexedName>,
    name_words: Vec<u32>,
    word_ids: HashMap<Box<str>, u32>,
    words: Vec<Box<str>>,
    word_weight: Vec<f32>,
    /// Postings: the names of word w are `postings[offsets[w]..offsets[w + 1]]`.
    offsets: Vec<u32>,
    postings: Vec<u32>,
    /// (hash of the word or a one-deletion of it, word), sorted.
    deletions: Vec<(u64, u32)>,
    /// (hash of a Double Metaphone key, word), sorted.
    phonetic: Vec<(u64, u32)>,
    /// (hash of a name's word-id sequence, name), sorted.
    exact: Vec<(u64, u32)>,
    /// The weight of a word no listed name has.
    rare_weight: f32,
    metaphone: DoubleMetaphone,
}

impl std::fmt::Debug for ScreeningIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScreeningIndex")
            .field("parties", &self.parties.len())
            .field("names", &self.names.len())
            .field("words", &self.words.len())
            .finish()
    }
}

/// Words shorter than this get no deletion neighbourhood (a deletion of "ali" is "al").
const MIN_TYPO_WORD: usize = 4;
/// Keys shorter than this are too coarse to find candidates by ("L" is Lee, Li and Lu).
const MIN_PHONETIC_KEY: usize = 2;

fn fnv(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn hash_str(s: &str) -> u64 {
    fnv(s.bytes())
}

fn hash_ids(ids: &[u32]) -> u64 {
    fnv(ids.iter().flat_map(|i| i.to_le_bytes()))
}

/// The word with each one of its characters left out in turn (each once).
fn deletions(word: &str, mut each: impl FnMut(u64)) {
    let chars: Vec<(usize, char)> = word.char_indices().collect();
    if chars.len() < MIN_TYPO_WORD {
        return;
    }
    let mut buf = String::with_capacity(word.len());
    let mut last = None;
    for &(at, c) in &chars {
        buf.clear();
        buf.push_str(&word[..at]);
        buf.push_str(&word[at + c.len_utf8()..]);
        let h = hash_str(&buf);
        // "allah" without either l is the same string: once is enough.
        if last != Some(h) {
            each(h);
        }
        last = Some(h);
    }
}

fn lookup(sorted: &[(u64, u32)], key: u64) -> impl Iterator<Item = u32> + '_ {
    let from = sorted.partition_point(|&(k, _)| k < key);
    sorted[from..]
        .iter()
        .take_while(move |&&(k, _)| k == key)
        .map(|&(_, v)| v)
}

impl ScreeningIndex {
    /// Parses `screening.toml` and `screening-list.json` and indexes them with the
    /// hand-entered `restricted-parties.csv`.
    pub(crate) fn parse(
        config: &Ctx<'_>,
        list: &Ctx<'_>,
        hand_entered: &RestrictedParties,
    ) -> Result<Self, PolicyError> {
        let config = ScreeningConfig::parse(config)?;
        let list = ScreeningList::parse_stored(list)?;
        Ok(Self::build(config, list, hand_entered))
    }

    /// Indexes `list` and the hand-entered parties.
    pub fn build(
        config: ScreeningConfig,
        list: ScreeningList,
        hand_entered: &RestrictedParties,
    ) -> Self {
        let csl_parties = list.parties.len();
        let mut parties = list.parties;
        for p in hand_entered.iter() {
            parties.push(ListedParty {
                source: p.list.clone(),
                code: String::new(),
                name: p.name.clone(),
                aliases: vec![],
                countries: if p.country.is_empty() {
                    vec![]
                } else {
                    vec![p.country.clone()]
                },
                programs: vec![],
                start_date: None,
                end_date: None,
                ids: vec![],
                entity_number: None,
                kind: None,
                id: None,
            });
        }
        let mut word_ids: HashMap<Box<str>, u32> = HashMap::new();
        let mut words: Vec<Box<str>> = Vec::new();
        let mut names = Vec::new();
        let mut name_words: Vec<u32> = Vec::new();
        for (pi, p) in parties.iter().enumerate() {
            let mut seen: Vec<String> = Vec::new();
            // The CSL lists individuals as "SURNAME, Given names": the given-names-first order
            // is the same name, so it matches exactly too.
            let individual = p.kind.as_deref() == Some("Individual");
            let forms = (0..=p.aliases.len()).flat_map(|k| {
                let text = p.name_or_alias(k);
                let turned = individual
                    .then(|| text.split_once(','))
                    .flatten()
                    .filter(|(_, given)| !given.contains(','))
                    .map(|(surname, given)| format!("{given} {surname}"));
                std::iter::once((k, normalise(text))).chain(turned.map(|t| (k, normalise(&t))))
            });
            for (k, n) in forms {
                if n.is_empty() || seen.contains(&n) {
                    continue;
                }
                let from = name_words.len() as u32;
                for w in n.split(' ') {
                    let id = match word_ids.get(w) {
                        Some(&id) => id,
                        None => {
                            let id = words.len() as u32;
                            words.push(w.into());
                            word_ids.insert(w.into(), id);
                            id
                        }
                    };
                    name_words.push(id);
                }
                names.push(IndexedName {
                    party: pi as u32,
                    alias: k as u32,
                    words: from..name_words.len() as u32,
                    weight: 0.0,
                });
                seen.push(n);
            }
        }
        // Postings, as offsets into one array (each name once per word).
        let mut df = vec![0u32; words.len()];
        for n in &names {
            let ws = &name_words[n.words.start as usize..n.words.end as usize];
            for (i, &w) in ws.iter().enumerate() {
                if !ws[..i].contains(&w) {
                    df[w as usize] += 1;
                }
            }
        }
        let mut offsets = Vec::with_capacity(words.len() + 1);
        let mut total = 0u32;
        for &d in &df {
            offsets.push(total);
            total += d;
        }
        offsets.push(total);
        let mut postings = vec![0u32; total as usize];
        let mut fill = offsets.clone();
        for (ni, n) in names.iter().enumerate() {
            let ws = &name_words[n.words.start as usize..n.words.end as usize];
            for (i, &w) in ws.iter().enumerate() {
                if !ws[..i].contains(&w) {
                    postings[fill[w as usize] as usize] = ni as u32;
                    fill[w as usize] += 1;
                }
            }
        }
        // A word's weight is its rarity: ln(1 + names / names with the word).
        let n_names = names.len().max(1) as f32;
        // A legal form left inside a name ("Hengtai Co Ltd Shenzhen Branch") weighs nothing.
        let word_weight: Vec<f32> = df
            .iter()
            .zip(&words)
            .map(|(&d, w)| {
                if is_legal_form(w) {
                    0.0
                } else {
                    (1.0 + n_names / d.max(1) as f32).ln()
                }
            })
            .collect();
        let rare_weight = (1.0 + n_names).ln();
        for n in &mut names {
            n.weight = name_words[n.words.start as usize..n.words.end as usize]
                .iter()
                .map(|&w| word_weight[w as usize])
                .sum();
        }
        let metaphone = DoubleMetaphone::new(Some(8));
        let mut deletion_keys = Vec::with_capacity(words.len() * 8);
        let mut phonetic = Vec::with_capacity(words.len() * 2);
        for (id, w) in words.iter().enumerate() {
            let id = id as u32;
            deletion_keys.push((hash_str(w), id));
            deletions(w, |h| deletion_keys.push((h, id)));
            for key in phonetic_keys(&metaphone, w) {
                phonetic.push((key, id));
            }
        }
        deletion_keys.sort_unstable();
        phonetic.sort_unstable();
        let mut exact: Vec<(u64, u32)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    hash_ids(&name_words[n.words.start as usize..n.words.end as usize]),
                    i as u32,
                )
            })
            .collect();
        exact.sort_unstable();
        Self {
            config,
            list_date: list.list_date,
            parties,
            csl_parties,
            names,
            name_words,
            word_ids,
            words,
            word_weight,
            offsets,
            postings,
            deletions: deletion_keys,
            phonetic,
            exact,
            rare_weight,
            metaphone,
        }
    }

    /// Parties listed, the CSL's and the hand-entered.
    pub fn len(&self) -> usize {
        self.parties.len()
    }

    /// Whether no party is listed.
    pub fn is_empty(&self) -> bool {
        self.parties.is_empty()
    }

    /// Parties from the hand-entered `restricted-parties.csv`.
    pub fn hand_entered(&self) -> usize {
        self.parties.len() - self.csl_parties
    }

    /// The day the CSL is as of.
    pub fn list_date(&self) -> Option<Date> {
        self.list_date
    }

    /// The settings it screens with.
    pub fn config(&self) -> &ScreeningConfig {
        &self.config
    }

    fn name_word_ids(&self, n: &IndexedName) -> &[u32] {
        &self.name_words[n.words.start as usize..n.words.end as usize]
    }

    fn postings(&self, w: u32) -> &[u32] {
        &self.postings[self.offsets[w as usize] as usize..self.offsets[w as usize + 1] as usize]
    }

    /// Screens `name` against every listed name and alias: one hit per party it matches,
    /// exact ones first, then by score. An exact match takes its list's action; a fuzzy one at
    /// or above the threshold is held for review; below it, nothing.
    pub fn screen(&self, name: &str) -> Vec<ScreenHit<'_>> {
        let q = normalise(name);
        if q.is_empty() {
            return vec![];
        }
        let qwords: Vec<&str> = q.split(' ').collect();
        // party -> (alias, kind)
        let mut best: BTreeMap<u32, (u32, MatchKind)> = BTreeMap::new();
        let known: Option<Vec<u32>> = qwords
            .iter()
            .map(|w| self.word_ids.get(*w).copied())
            .collect();
        if let Some(ids) = &known {
            for ni in lookup(&self.exact, hash_ids(ids)) {
                let n = &self.names[ni as usize];
                if self.name_word_ids(n) == ids.as_slice() {
                    best.entry(n.party).or_insert((n.alias, MatchKind::Exact));
                }
            }
        }
        // For each word of the query: the listed words close to it, with their similarity.
        // A legal form, even mistyped, is no evidence either way: it finds nothing and weighs
        // nothing. A word no listed name has weighs as the rarest.
        let qweight: Vec<f32> = qwords
            .iter()
            .map(|w| match self.word_ids.get(*w) {
                _ if is_legal_form(w) => 0.0,
                Some(&id) => self.word_weight[id as usize],
                None if is_mistyped_legal_form(w) => 0.0,
                None => self.rare_weight,
            })
            .collect();
        let close: Vec<Vec<(u32, f32)>> = qwords
            .iter()
            .zip(&qweight)
            .map(|(w, &q)| {
                if q == 0.0 {
                    vec![]
                } else {
                    self.close_words(w)
                }
            })
            .collect();
        // Prefix filtering: the rarest query words, as few as it takes that a listed name
        // matching none of them could not reach the threshold however well it matched the
        // rest (each other word paired at its heaviest close word, similarity 1). Only their
        // postings are candidates: "Mohammed" or "Shenzhen" never has to be looked through.
        let cap: Vec<f32> = close
            .iter()
            .map(|c| {
                c.iter()
                    .map(|&(w, _)| self.word_weight[w as usize])
                    .fold(0.0, f32::max)
            })
            .collect();
        let mut order: Vec<usize> = (0..qwords.len()).filter(|&i| qweight[i] > 0.0).collect();
        order.sort_by(|&a, &b| qweight[b].total_cmp(&qweight[a]));
        let (mut rest, mut missed) = (cap.iter().sum::<f32>(), 0f32);
        let mut candidates: Vec<u32> = Vec::new();
        for i in order {
            let mut whole = true;
            for &(w, _) in &close[i] {
                let p = self.postings(w);
                if p.len() <= self.config.common_word_names {
                    candidates.extend_from_slice(p);
                } else {
                    whole = false;
                }
            }
            if !whole {
                // Too common to list every name it is in: names with it are not all
                // candidates, so it cannot be a word that candidates must have.
                continue;
            }
            rest -= cap[i];
            missed += qweight[i];
            let bound = if rest > 0.0 {
                f64::from(2.0 * rest / (2.0 * rest + missed))
            } else {
                0.0
            };
            if bound + 1e-6 < self.config.threshold {
                break;
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        let threshold = self.config.threshold;
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for ni in candidates {
            let n = &self.names[ni as usize];
            if matches!(best.get(&n.party), Some((_, MatchKind::Exact))) {
                continue;
            }
            let score = self.score(&close, &qweight, n, &mut pairs);
            if score + 1e-9 >= threshold {
                let kind = MatchKind::Fuzzy { score, threshold };
                match best.get(&n.party) {
                    Some((_, MatchKind::Fuzzy { score: s, .. })) if *s >= score => {}
                    _ => {
                        best.insert(n.party, (n.alias, kind));
                    }
                }
            }
        }
        let mut hits: Vec<ScreenHit<'_>> = best
            .into_iter()
            .map(|(pi, (alias, kind))| {
                let hand = pi as usize >= self.csl_parties;
                let party = &self.parties[pi as usize];
                let action = match kind {
                    MatchKind::Fuzzy { .. } => ScreenAction::Review,
                    MatchKind::Exact if hand => ScreenAction::Deny,
                    MatchKind::Exact => self.config.exact_action(&party.code),
                };
                ScreenHit {
                    party,
                    alias: alias as usize,
                    kind,
                    action,
                    provenance: if hand {
                        "hand-entered list".into()
                    } else {
                        match self.list_date {
                            Some(d) => format!("CSL of {d}"),
                            None => "CSL".into(),
                        }
                    },
                }
            })
            .collect();
        let rank = |h: &ScreenHit<'_>| match h.kind {
            MatchKind::Exact => 2.0,
            MatchKind::Fuzzy { score, .. } => score,
        };
        hits.sort_by(|a, b| {
            b.action
                .cmp(&a.action)
                .then(rank(b).total_cmp(&rank(a)))
                .then_with(|| a.party.name.cmp(&b.party.name))
        });
        hits
    }

    /// The listed words within a typo (a shared one-character deletion) or a transliteration
    /// (a shared Double Metaphone key) of `w`, each with its similarity, at or above the
    /// word floor.
    fn close_words(&self, w: &str) -> Vec<(u32, f32)> {
        let mut found: Vec<u32> = Vec::new();
        found.extend(lookup(&self.deletions, hash_str(w)));
        deletions(w, |h| found.extend(lookup(&self.deletions, h)));
        let keys = phonetic_keys(&self.metaphone, w);
        let mut by_sound: Vec<u32> = Vec::new();
        for k in &keys {
            by_sound.extend(lookup(&self.phonetic, *k));
        }
        found.extend_from_slice(&by_sound);
        found.sort_unstable();
        found.dedup();
        let floor = self.config.word_floor as f32;
        found
            .into_iter()
            .filter_map(|id| {
                let listed = &*self.words[id as usize];
                let mut s = if listed == w {
                    1.0
                } else {
                    strsim::jaro_winkler(w, listed) as f32
                };
                if s < self.config.phonetic_similarity as f32
                    && s >= self.config.phonetic_floor as f32
                    && by_sound.contains(&id)
                {
                    s = self.config.phonetic_similarity as f32;
                }
                (s >= floor).then_some((id, s))
            })
            .collect()
    }

    /// How well the query's words and name `n`'s words pair up: each pair of words at most
    /// once, closest first; a pair counts its similarity times the listed word's rarity, twice
    /// (once for each side); a word left unpaired counts against the match by its own rarity
    /// (a listed one times `missing_listed_word_weight`).
    fn score(
        &self,
        close: &[Vec<(u32, f32)>],
        qweight: &[f32],
        n: &IndexedName,
        pairs: &mut Vec<(f32, usize, usize)>,
    ) -> f64 {
        let nwords = self.name_word_ids(n);
        pairs.clear();
        for (i, c) in close.iter().enumerate() {
            for (j, w) in nwords.iter().enumerate() {
                if let Some(&(_, s)) = c.iter().find(|(id, _)| id == w) {
                    pairs.push((s, i, j));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (mut qused, mut nused) = (0u64, 0u64);
        let (mut num, mut den) = (0f32, 0f32);
        for &(s, i, j) in pairs.iter() {
            if i >= 64 || j >= 64 || qused & (1 << i) != 0 || nused & (1 << j) != 0 {
                continue;
            }
            qused |= 1 << i;
            nused |= 1 << j;
            let w = self.word_weight[nwords[j] as usize];
            num += 2.0 * w * s;
            den += 2.0 * w;
        }
        for (i, w) in qweight.iter().enumerate() {
            if i >= 64 || qused & (1 << i) == 0 {
                den += w;
            }
        }
        let missing = self.config.missing_listed_word_weight as f32;
        for (j, &w) in nwords.iter().enumerate() {
            if j >= 64 || nused & (1 << j) == 0 {
                den += missing * self.word_weight[w as usize];
            }
        }
        if den <= 0.0 {
            return 0.0;
        }
        f64::from(num / den)
    }
}

/// The Double Metaphone keys (primary and alternate) of a word, hashed; none for a word
/// whose keys are too short to tell names apart.
fn phonetic_keys(m: &DoubleMetaphone, w: &str) -> Vec<u64> {
    if !w.bytes().all(|b| b.is_ascii_alphabetic()) {
        return vec![];
    }
    let (a, b) = (m.encode(w), m.encode_alternate(w));
    let mut keys = Vec::with_capacity(2);
    for k in [a, b] {
        if k.len() >= MIN_PHONETIC_KEY {
            let h = hash_str(&k);
            if !keys.contains(&h) {
                keys.push(h);
            }
        }
    }
    keys
}

#[cfg(test)]
mod tests;
