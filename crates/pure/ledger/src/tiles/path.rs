//! Where each object of a tiled log lives (C2SP tlog-tiles, "APIs"): `checkpoint`,
//! `tile/<L>/<N>[.p/<W>]` and `tile/entries/<N>[.p/<W>]`, relative to the log's prefix, and
//! the strict parser back: every path it accepts is the one [`TlogPath`]'s `Display` writes,
//! so one object has one name.
//!
//! `<N>` is written in 3-digit groups, all but the last prefixed with `x` (1234067 is
//! `x001/x234/067`); `<W>` is 1 to 255, decimal, with no leading zero, and only on partial
//! tiles. Levels stop at 7: a tree of at most 2^64 − 1 entries has no hash of height 64, so a
//! path naming a tile no such tree can have is refused rather than carried into arithmetic.

use std::fmt;
use std::str::FromStr;

/// Hashes in a full tile (tile height 8).
pub const TILE_WIDTH: u64 = 256;

/// The highest tile level of a tree of at most 2^64 − 1 entries: level 7 holds hashes of
/// subtrees of 2^56 entries.
pub const MAX_LEVEL: u8 = 7;

/// Why a tile or bundle coordinate, or a path, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Not one of `checkpoint`, `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`.
    #[error("'{path}' is not a tlog-tiles path: {why}")]
    Malformed {
        /// The path as given.
        path: String,
        /// What is wrong with it, in words.
        why: &'static str,
    },
    /// A level above [`MAX_LEVEL`].
    #[error(
        "tile level {0} is beyond the top level ({MAX_LEVEL}) of any tree of 2^64 − 1 entries"
    )]
    Level(u64),
    /// A width of 0 or above 256.
    #[error("tile width {0} is not between 1 and 256")]
    Width(u64),
    /// A tile or bundle that starts at or past entry 2^64.
    #[error("tile {index} of level {level} starts beyond entry 2^64 − 1")]
    Index {
        /// Its level (0 for an entry bundle).
        level: u8,
        /// Its index within the level.
        index: u64,
    },
}

/// Checks that a tile of `level` and `index` starts below entry 2^64: its first entry is
/// `index · 256^(level+1)`.
fn check_start(level: u8, index: u64) -> Result<(), PathError> {
    let shift = 8 * (u32::from(level) + 1);
    let fits = if shift >= 64 {
        index == 0
    } else {
        index >> (64 - shift) == 0
    };
    if fits {
        Ok(())
    } else {
        Err(PathError::Index { level, index })
    }
}

fn check_width(width: u64) -> Result<u16, PathError> {
    if (1..=TILE_WIDTH).contains(&width) {
        Ok(width as u16)
    } else {
        Err(PathError::Width(width))
    }
}

/// A hash tile's coordinates: the `width` hashes of level-`8·level` subtrees numbered
/// `256·index ..`, in the tree of entries `index · 256^(level+1) ..`. A width of 256 is a full
/// tile, which never changes once written; a smaller width is a partial tile, the right edge
/// of one tree size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    level: u8,
    index: u64,
    width: u16,
}

impl TileId {
    /// The tile at `level` (0 to 7), `index`, `width` (1 to 256).
    pub fn new(level: u8, index: u64, width: u64) -> Result<Self, PathError> {
        if level > MAX_LEVEL {
            return Err(PathError::Level(level.into()));
        }
        check_start(level, index)?;
        Ok(Self {
            level,
            index,
            width: check_width(width)?,
        })
    }

    /// The tile at `level` and `index` as it is in the tree of `size` entries: full, partial,
    /// or `None` when that tree has no hash in it.
    pub fn in_tree(level: u8, index: u64, size: u64) -> Option<Self> {
        if level > MAX_LEVEL {
            return None;
        }
        let hashes = size >> (8 * u32::from(level));
        let before = index.checked_mul(TILE_WIDTH)?;
        let width = hashes.checked_sub(before).filter(|&w| w > 0)?;
        Some(Self {
            level,
            index,
            width: width.min(TILE_WIDTH) as u16,
        })
    }

    /// Its level: it holds hashes of subtrees of `256^level` entries.
    pub fn level(&self) -> u8 {
        self.level
    }

    /// Its index within the level.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// How many hashes it holds (1 to 256).
    pub fn width(&self) -> u64 {
        self.width.into()
    }

    /// Whether it holds all 256 hashes (and so is written once and never changes).
    pub fn is_full(&self) -> bool {
        self.width() == TILE_WIDTH
    }

    /// The full tile at the same place.
    pub fn full(&self) -> Self {
        Self {
            width: TILE_WIDTH as u16,
            ..*self
        }
    }

    /// Its path, `tile/<L>/<N>[.p/<W>]`.
    pub fn path(&self) -> TlogPath {
        TlogPath::Tile(*self)
    }
}

/// An entry bundle's coordinates: the `width` entries `256·index ..`, which hash to the
/// level-0 tile of the same index and width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BundleId {
    index: u64,
    width: u16,
}

impl BundleId {
    /// The bundle at `index` with `width` (1 to 256) entries.
    pub fn new(index: u64, width: u64) -> Result<Self, PathError> {
        check_start(0, index)?;
        Ok(Self {
            index,
            width: check_width(width)?,
        })
    }

    /// The bundle at `index` as it is in the tree of `size` entries, or `None`.
    pub fn in_tree(index: u64, size: u64) -> Option<Self> {
        TileId::in_tree(0, index, size).map(Self::of_tile)
    }

    /// The bundle of the entries whose leaf hashes level-0 `tile` holds.
    ///
    /// # Panics
    /// If `tile` is not of level 0.
    pub fn of_tile(tile: TileId) -> Self {
        assert_eq!(tile.level, 0, "only level-0 tiles have entry bundles");
        Self {
            index: tile.index,
            width: tile.width,
        }
    }

    /// The level-0 tile holding its entries' leaf hashes.
    pub fn tile(&self) -> TileId {
        TileId {
            level: 0,
            index: self.index,
            width: self.width,
        }
    }

    /// Its index: it holds entries `256·index ..`.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// How many entries it holds (1 to 256).
    pub fn width(&self) -> u64 {
        self.width.into()
    }

    /// Whether it holds all 256 entries (and so is written once and never changes).
    pub fn is_full(&self) -> bool {
        self.width() == TILE_WIDTH
    }

    /// Its path, `tile/entries/<N>[.p/<W>]`.
    pub fn path(&self) -> TlogPath {
        TlogPath::Entries(*self)
    }
}

/// An object of a tiled log, named by its path relative to the log's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlogPath {
    /// `checkpoint`: the latest signed checkpoint note (replaced on every checkpoint).
    Checkpoint,
    /// `tile/<L>/<N>[.p/<W>]`: a hash tile.
    Tile(TileId),
    /// `tile/entries/<N>[.p/<W>]`: an entry bundle.
    Entries(BundleId),
}

impl TlogPath {
    /// Whether the object never changes once written (full tiles and full bundles): it is
    /// created once (`If-None-Match: *`) and belongs in write-once storage.
    pub fn is_immutable(&self) -> bool {
        match self {
            TlogPath::Checkpoint => false,
            TlogPath::Tile(t) => t.is_full(),
            TlogPath::Entries(b) => b.is_full(),
        }
    }
}

fn write_index(f: &mut fmt::Formatter<'_>, index: u64, width: u16) -> fmt::Result {
    let mut groups = vec![index % 1000];
    let mut n = index / 1000;
    while n > 0 {
        groups.push(n % 1000);
        n /= 1000;
    }
    for g in groups.iter().skip(1).rev() {
        write!(f, "x{g:03}/")?;
    }
    write!(f, "{:03}", groups[0])?;
    if u64::from(width) != TILE_WIDTH {
        write!(f, ".p/{width}")?;
    }
    Ok(())
}

impl fmt::Display for TlogPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlogPath::Checkpoint => f.write_str("checkpoint"),
            TlogPath::Tile(t) => {
                write!(f, "tile/{}/", t.level)?;
                write_index(f, t.index, t.width)
            }
            TlogPath::Entries(b) => {
                f.write_str("tile/entries/")?;
                write_index(f, b.index, b.width)
            }
        }
    }
}

impl fmt::Display for TileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.path().fmt(f)
    }
}

impl fmt::Display for BundleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.path().fmt(f)
    }
}

/// A decimal of ASCII digits with no leading zero (except "0" itself), at most `max`.
fn decimal(s: &str, max: u64) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse::<u64>().ok().filter(|&v| v <= max)
}

/// Three ASCII digits.
fn group(s: &str) -> Option<u64> {
    (s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().expect("3 digits"))
}

/// Parses `<N>[.p/<W>]` (the components after the level), giving the index and the width.
fn parse_index(parts: &[&str]) -> Result<(u64, u64), &'static str> {
    let (groups, width) = match parts {
        [init @ .., last, w] if last.ends_with(".p") => {
            let w = decimal(w, TILE_WIDTH - 1)
                .filter(|&w| w > 0)
                .ok_or("a partial width must be 1 to 255, in decimal with no leading zero")?;
            let mut g: Vec<&str> = init.to_vec();
            g.push(&last[..last.len() - 2]);
            (g, w)
        }
        _ => (parts.to_vec(), TILE_WIDTH),
    };
    let (last, init) = groups.split_last().ok_or("no index")?;
    if init.len() > 6 {
        return Err("index has more than 7 groups of 3 digits");
    }
    let mut index: u64 = 0;
    for (k, g) in init.iter().enumerate() {
        let v = g
            .strip_prefix('x')
            .and_then(group)
            .ok_or("all but the last index group must be 'x' and 3 digits")?;
        if k == 0 && v == 0 {
            return Err("index has a leading group of zeros");
        }
        index = index * 1000 + v;
    }
    let v = group(last).ok_or("the last index group must be 3 digits")?;
    let index = index
        .checked_mul(1000)
        .and_then(|i| i.checked_add(v))
        .ok_or("index exceeds 2^64 − 1")?;
    Ok((index, width))
}

impl FromStr for TlogPath {
    type Err = PathError;

    fn from_str(path: &str) -> Result<Self, PathError> {
        let bad = |why| PathError::Malformed {
            path: path.into(),
            why,
        };
        if path == "checkpoint" {
            return Ok(TlogPath::Checkpoint);
        }
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["tile", "entries", rest @ ..] => {
                let (index, width) = parse_index(rest).map_err(bad)?;
                Ok(TlogPath::Entries(BundleId::new(index, width)?))
            }
            ["tile", level, rest @ ..] => {
                let level = decimal(level, 63).ok_or(bad(
                    "the level must be 0 to 63, in decimal with no leading zero",
                ))?;
                if level > u64::from(MAX_LEVEL) {
                    return Err(PathError::Level(level));
                }
                let (index, width) = parse_index(rest).map_err(bad)?;
                Ok(TlogPath::Tile(TileId::new(level as u8, index, width)?))
            }
            _ => Err(bad("not 'checkpoint' and not under 'tile/'")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tile(level: u8, index: u64, width: u64) -> TlogPath {
        TlogPath::Tile(TileId::new(level, index, width).unwrap())
    }

    fn bundle(index: u64, width: u64) -> TlogPath {
        TlogPath::Entries(BundleId::new(index, width).unwrap())
    }

    #[test]
    fn paths_as_the_spec_writes_them() {
        let rows: &[(TlogPath, &str)] = &[
            (TlogPath::Checkpoint, "checkpoint"),
            (tile(0, 0, 256), "tile/0/000"),
            (tile(0, 0, 1), "tile/0/000.p/1"),
            (tile(1, 5, 255), "tile/1/005.p/255"),
            (tile(0, 999, 256), "tile/0/999"),
            (tile(0, 1000, 256), "tile/0/x001/000"),
            (tile(3, 1_234_067, 256), "tile/3/x001/x234/067"),
            (tile(3, 1_234_067, 7), "tile/3/x001/x234/067.p/7"),
            (bundle(1_234_067, 256), "tile/entries/x001/x234/067"),
            (bundle(0, 112), "tile/entries/000.p/112"),
            (tile(7, 0, 255), "tile/7/000.p/255"),
            (
                tile(0, (1 << 56) - 1, 256),
                "tile/0/x072/x057/x594/x037/x927/935",
            ),
        ];
        for (p, s) in rows {
            assert_eq!(p.to_string(), *s);
            assert_eq!(s.parse::<TlogPath>().as_ref(), Ok(p), "{s}");
        }
    }

    #[test]
    fn non_canonical_and_impossible_paths_are_refused() {
        let rows = [
            "",
            "checkpoint/",
            "/checkpoint",
            "tile",
            "tile/",
            "tile/0",
            "tile/0/",
            "tile/0/00",
            "tile/0/0000",
            "tile/0/1",
            "tile/0/+01",
            "tile/0/-01",
            "tile/0/ 01",
            "tile/0/001/",
            "tile/0//001",
            "tile/0/x001",
            "tile/0/001/002",
            "tile/0/x000/001",
            "tile/0/x01/001",
            "tile/0/X001/001",
            "tile/0/x001/x002",
            "tile/00/001",
            "tile/01/001",
            "tile/8/000",
            "tile/63/000",
            "tile/64/000",
            "tile/-1/000",
            "tile/a/000",
            "tile/0/000.p",
            "tile/0/000.p/",
            "tile/0/000.p/0",
            "tile/0/000.p/00",
            "tile/0/000.p/01",
            "tile/0/000.p/256",
            "tile/0/000.p/+5",
            "tile/0/000.p/5/",
            "tile/0/000.p/5/6",
            "tile/0/000.q/5",
            "tile/0/000p/5",
            "tile/0/x001.p/000",
            "tile/entries",
            "tile/entries/",
            "tile/entries/1",
            "tile/entries/000.p/0",
            "tile/entries/x000/999",
            "tile/data/000",
            "tiles/0/000",
            "Tile/0/000",
            // 2^64 and beyond
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/0/x001/x018/x446/x744/x073/x709/x551/616",
            // starts past entry 2^64 − 1
            "tile/0/x072/x057/x594/x037/x927/936",
            "tile/7/001",
            "tile/entries/x072/x057/x594/x037/x927/936",
            // a full-width group count with a non-digit
            "tile/0/x00a/000",
            "tile/0/０００",
        ];
        for s in rows {
            assert!(s.parse::<TlogPath>().is_err(), "accepted {s:?}");
        }
    }

    #[test]
    fn coordinates_are_checked() {
        assert_eq!(TileId::new(8, 0, 1), Err(PathError::Level(8)));
        assert_eq!(TileId::new(0, 0, 0), Err(PathError::Width(0)));
        assert_eq!(TileId::new(0, 0, 257), Err(PathError::Width(257)));
        assert!(TileId::new(6, 255, 1).is_ok());
        assert!(TileId::new(6, 256, 1).is_err());
        assert!(TileId::new(7, 1, 1).is_err());
        assert!(BundleId::new(1 << 56, 1).is_err());
        assert!(BundleId::new((1 << 56) - 1, 256).is_ok());
    }

    #[test]
    fn tiles_in_a_tree() {
        // The spec's example: a tree of 70,000 entries has 273 full level-0 tiles, a partial
        // one of width 112, one full level-1 tile, a partial of width 17 and a partial level-2
        // tile of width 1.
        let n = 70_000;
        assert_eq!(TileId::in_tree(0, 272, n).unwrap().width(), 256);
        assert_eq!(TileId::in_tree(0, 273, n).unwrap().width(), 112);
        assert_eq!(TileId::in_tree(0, 274, n), None);
        assert_eq!(TileId::in_tree(1, 0, n).unwrap().width(), 256);
        assert_eq!(TileId::in_tree(1, 1, n).unwrap().width(), 17);
        assert_eq!(TileId::in_tree(1, 2, n), None);
        assert_eq!(TileId::in_tree(2, 0, n).unwrap().width(), 1);
        assert_eq!(TileId::in_tree(3, 0, n), None);
        assert_eq!(TileId::in_tree(0, 0, 0), None);
        assert_eq!(TileId::in_tree(7, 0, u64::MAX).unwrap().width(), 255);
        assert_eq!(TileId::in_tree(0, u64::MAX, u64::MAX), None);
        assert_eq!(BundleId::in_tree(273, n).unwrap().width(), 112);
    }

    fn any_tile() -> impl Strategy<Value = TileId> {
        (0..=MAX_LEVEL, any::<u64>(), 1..=TILE_WIDTH).prop_map(|(l, i, w)| {
            let shift = 8 * (u32::from(l) + 1);
            let i = if shift >= 64 { 0 } else { i >> shift };
            TileId::new(l, i, w).unwrap()
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn every_path_parses_back_to_itself(t in any_tile(), i in any::<u64>(), w in 1..=TILE_WIDTH) {
            for p in [t.path(), BundleId::new(i >> 8, w).unwrap().path()] {
                let s = p.to_string();
                prop_assert_eq!(s.parse::<TlogPath>(), Ok(p));
            }
        }

        #[test]
        fn what_parses_prints_back_the_same(s in "(tile/(entries|[0-9]{1,2})/(x[0-9]{3}/){0,3}[0-9]{1,4}(\\.p/[0-9]{1,3})?)|[a-z/.0-9]{0,12}") {
            if let Ok(p) = s.parse::<TlogPath>() {
                prop_assert_eq!(p.to_string(), s);
            }
        }
    }
}
