//! Belgian municipalities and their NIS (REFNIS) codes, as valid on 2025-01-01.
//!
//! Every life event names a municipality by its 5-digit NIS code (the municipality of birth,
//! of residence, of death). The gateway checks the code with [`lookup`]; a code retired by the
//! mergers of 2025-01-01 gets an error that names its successor, because registries and
//! citizens will keep sending old codes for years. The registry simulator draws realistic
//! municipalities with [`pick`].
//!
//! The table is Statbel's REFNIS list after the 2025 mergers: 565 municipalities (Flanders
//! 285, Wallonia 261, Brussels 19), embedded in the binary from `data/` (see its README for
//! the source and caveats) and parsed once on first use.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use chrono::NaiveDate;

/// The date of the 2025 mergers, when the merged-away codes stopped being valid.
pub const MERGER_DATE: NaiveDate = match NaiveDate::from_ymd_opt(2025, 1, 1) {
    Some(date) => date,
    None => panic!("2025-01-01 is a date"),
};

/// Why a NIS code does not name a current municipality.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MunicipalityError {
    /// Not exactly 5 ASCII digits.
    #[error("NIS code {code:?} is malformed: a NIS code has exactly 5 digits")]
    Malformed {
        /// The input, cut to its first 16 characters.
        code: String,
    },
    /// A code retired by the mergers of 2025-01-01.
    #[error(
        "NIS code {old} ({old_name}) was merged into {new_code} {new_name} on 2025-01-01; use {new_code}"
    )]
    MergedAway {
        /// The retired code.
        old: String,
        /// The retired municipality's Dutch name.
        old_name: &'static str,
        /// The code of the municipality it became part of.
        new_code: NisCode,
        /// That municipality's Dutch name.
        new_name: &'static str,
    },
    /// Well formed, but no municipality has had this code since 2025-01-01.
    #[error("NIS code {code} is not a Belgian municipality on 2025-01-01")]
    Unknown {
        /// The code.
        code: String,
    },
}

/// A 5-digit NIS (REFNIS) code: of a municipality, an arrondissement or a province.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NisCode(u32);

impl NisCode {
    /// Parses exactly 5 ASCII digits. Says nothing about whether the code is in use.
    pub fn parse(code: &str) -> Result<Self, MunicipalityError> {
        if code.len() != 5 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(MunicipalityError::Malformed {
                code: code.chars().take(16).collect(),
            });
        }
        let value = code.bytes().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
        Ok(NisCode(value))
    }

    /// The code as a number, e.g. `11002`.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for NisCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:05}", self.0)
    }
}

impl FromStr for NisCode {
    type Err = MunicipalityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NisCode::parse(s)
    }
}

/// The three regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    /// Vlaanderen.
    Flanders,
    /// Wallonie (including the German-speaking Community's municipalities).
    Wallonia,
    /// Brussels-Capital Region.
    Brussels,
}

impl Region {
    /// The lowercase English name used in the data files: `flanders`, `wallonia`, `brussels`.
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Flanders => "flanders",
            Region::Wallonia => "wallonia",
            Region::Brussels => "brussels",
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A municipality valid on 2025-01-01.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Municipality {
    /// Its NIS code.
    pub nis_code: NisCode,
    /// Dutch name, Statbel's text exactly, with any disambiguating qualifier such as
    /// `Aalst (Aalst)`; see [`Municipality::display_name_nl`].
    pub name_nl: &'static str,
    /// French name (the Dutch name for most new 2025 codes: Statbel's list had none yet).
    pub name_fr: &'static str,
    /// German name (as for `name_fr`).
    pub name_de: &'static str,
    /// NIS code of its arrondissement.
    pub arrondissement: NisCode,
    /// NIS code of its province; `None` for the Brussels municipalities, which have none.
    pub province: Option<NisCode>,
    /// Its region.
    pub region: Region,
    /// Start of the code's current REFNIS validity (1970-01-01 is Statbel's earliest date,
    /// not a founding date).
    pub valid_from: NaiveDate,
}

impl Municipality {
    /// The Dutch name without Statbel's trailing qualifier: `Aalst (Aalst)` becomes `Aalst`.
    pub fn display_name_nl(&self) -> &'static str {
        strip_qualifier(self.name_nl)
    }
}

fn strip_qualifier(name: &str) -> &str {
    match name.find(" (") {
        Some(at) if name.ends_with(')') => name.get(..at).unwrap_or(name),
        _ => name,
    }
}

/// One municipality that took part in a 2025 merger (the data's `municipality-mergers-2025`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merger {
    /// The code before the merger (still current for Antwerpen, 11002, which kept its code).
    pub old_code: NisCode,
    /// The Dutch name before the merger.
    pub old_name_nl: &'static str,
    /// The code of the merged municipality.
    pub new_code: NisCode,
    /// The Dutch name of the merged municipality.
    pub new_name_nl: &'static str,
}

const MUNICIPALITIES_CSV: &str = include_str!("../data/municipalities.csv");
const MERGERS_CSV: &str = include_str!("../data/municipality-mergers-2025.csv");

/// A row of the embedded data that does not parse: a bug in the data, caught by the tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}, line {line}: {reason}")]
struct DataError {
    file: &'static str,
    line: usize,
    reason: String,
}

/// The data rows of a header-first CSV without quoting (the files have none), as
/// (1-based line number, fields).
fn rows(csv: &'static str) -> impl Iterator<Item = (usize, Vec<&'static str>)> {
    csv.lines()
        .enumerate()
        .skip(1)
        .map(|(i, line)| (i + 1, line.trim_end_matches('\r')))
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| (n, line.split(',').collect()))
}

fn parse_municipalities(csv: &'static str) -> Result<Vec<Municipality>, DataError> {
    const FILE: &str = "municipalities.csv";
    let mut out = Vec::new();
    for (line, fields) in rows(csv) {
        let error = |reason: String| DataError {
            file: FILE,
            line,
            reason,
        };
        let [
            code,
            nl,
            fr,
            de,
            arrondissement,
            province,
            region,
            valid_from,
        ] = fields[..]
        else {
            return Err(error(format!("{} fields, expected 8", fields.len())));
        };
        let code_of = |s: &str| NisCode::parse(s).map_err(|e| error(e.to_string()));
        out.push(Municipality {
            nis_code: code_of(code)?,
            name_nl: nl,
            name_fr: fr,
            name_de: de,
            arrondissement: code_of(arrondissement)?,
            province: match province {
                "" => None,
                p => Some(code_of(p)?),
            },
            region: match region {
                "flanders" => Region::Flanders,
                "wallonia" => Region::Wallonia,
                "brussels" => Region::Brussels,
                other => return Err(error(format!("unknown region {other:?}"))),
            },
            valid_from: NaiveDate::parse_from_str(valid_from, "%Y-%m-%d")
                .map_err(|e| error(format!("valid_from {valid_from:?}: {e}")))?,
        });
    }
    // Sorted so lookups can binary-search, whatever the file's order.
    out.sort_by_key(|m| m.nis_code);
    for region in [Region::Flanders, Region::Wallonia, Region::Brussels] {
        // `pick_in` relies on every region having a municipality.
        if !out.iter().any(|m| m.region == region) {
            return Err(DataError {
                file: FILE,
                line: 0,
                reason: format!("no municipality in {region}"),
            });
        }
    }
    Ok(out)
}

fn parse_mergers(csv: &'static str) -> Result<Vec<Merger>, DataError> {
    let mut out = Vec::new();
    for (line, fields) in rows(csv) {
        let error = |reason: String| DataError {
            file: "municipality-mergers-2025.csv",
            line,
            reason,
        };
        let [old_code, old_name_nl, new_code, new_name_nl] = fields[..] else {
            return Err(error(format!("{} fields, expected 4", fields.len())));
        };
        let code_of = |s: &str| NisCode::parse(s).map_err(|e| error(e.to_string()));
        out.push(Merger {
            old_code: code_of(old_code)?,
            old_name_nl,
            new_code: code_of(new_code)?,
            new_name_nl,
        });
    }
    Ok(out)
}

// The embedded files are part of the source: if they do not parse, that is a bug that the
// tests in this module catch, not an input or I/O failure a caller could handle.
#[allow(clippy::expect_used, reason = "embedded data, checked by tests")]
static MUNICIPALITIES: LazyLock<Vec<Municipality>> = LazyLock::new(|| {
    parse_municipalities(MUNICIPALITIES_CSV)
        .expect("embedded data/municipalities.csv must parse (see the crate's tests)")
});

#[allow(clippy::expect_used, reason = "embedded data, checked by tests")]
static MERGERS: LazyLock<Vec<Merger>> = LazyLock::new(|| {
    parse_mergers(MERGERS_CSV)
        .expect("embedded data/municipality-mergers-2025.csv must parse (see the crate's tests)")
});

/// All 565 municipalities valid on 2025-01-01, sorted by NIS code.
pub fn all() -> &'static [Municipality] {
    &MUNICIPALITIES
}

/// The municipalities of one region, by NIS code.
pub fn in_region(region: Region) -> impl Iterator<Item = &'static Municipality> {
    all().iter().filter(move |m| m.region == region)
}

/// The 285 Flemish municipalities, by NIS code.
pub fn flemish() -> impl Iterator<Item = &'static Municipality> {
    in_region(Region::Flanders)
}

/// Every municipality that took part in a 2025 merger, one row each (30 rows).
pub fn mergers() -> &'static [Merger] {
    &MERGERS
}

/// The current municipality with this NIS code; see [`lookup_code`] for the errors.
pub fn lookup(code: &str) -> Result<&'static Municipality, MunicipalityError> {
    lookup_code(NisCode::parse(code)?)
}

/// The current municipality with this NIS code, or why there is none: the code was merged
/// away on 2025-01-01 (the error names the successor), or it is unknown.
pub fn lookup_code(code: NisCode) -> Result<&'static Municipality, MunicipalityError> {
    let table = all();
    if let Ok(at) = table.binary_search_by_key(&code, |m| m.nis_code)
        && let Some(found) = table.get(at)
    {
        return Ok(found);
    }
    // Only reached for codes that are not current, so Antwerpen's identity row never is.
    match mergers().iter().find(|m| m.old_code == code) {
        Some(merger) => Err(MunicipalityError::MergedAway {
            old: code.to_string(),
            old_name: merger.old_name_nl,
            new_code: merger.new_code,
            new_name: merger.new_name_nl,
        }),
        None => Err(MunicipalityError::Unknown {
            code: code.to_string(),
        }),
    }
}

/// Approximate populations on 2024-01-01, in thousands, rounded, with the 2025 mergers
/// applied (e.g. Antwerpen includes Borsbeek). Each entry carries the Dutch name so a test
/// can check the code against the table.
const APPROX_POPULATION_THOUSANDS: &[(u32, &str, u32)] = &[
    // Flanders: the cities and the larger municipalities.
    (11002, "Antwerpen", 545),
    (44021, "Gent", 265),
    (31005, "Brugge", 120),
    (24062, "Leuven", 105),
    (41002, "Aalst (Aalst)", 89),
    (71072, "Hasselt", 89),
    (12025, "Mechelen", 88),
    (46030, "Beveren-Kruibeke-Zwijndrecht", 87),
    (46021, "Sint-Niklaas (Sint-Niklaas)", 81),
    (34022, "Kortrijk", 79),
    (35013, "Oostende", 72),
    (71016, "Genk", 67),
    (36015, "Roeselare", 65),
    (46029, "Lokeren", 49),
    (71004, "Beringen", 47),
    (42006, "Dendermonde", 46),
    (13040, "Turnhout", 46),
    (23088, "Vilvoorde", 46),
    (44083, "Deinze", 45),
    (12014, "Heist-op-den-Berg", 43),
    (23016, "Dilbeek", 43),
    (73110, "Bilzen-Hoeselt", 42),
    (73111, "Tongeren-Borgloon", 42),
    (13008, "Geel", 41),
    (71053, "Sint-Truiden", 41),
    (23027, "Halle (Halle-Vilvoorde)", 40),
    (41048, "Ninove", 40),
    (11008, "Brasschaat", 39),
    (34040, "Waregem", 39),
    (23025, "Grimbergen", 38),
    (73107, "Maasmechelen", 38),
    (44088, "Merelbeke-Melle", 37),
    (13025, "Mol", 37),
    // Brussels: all 19.
    (21004, "Brussel", 195),
    (21015, "Schaarbeek", 133),
    (21001, "Anderlecht", 128),
    (21012, "Sint-Jans-Molenbeek", 98),
    (21009, "Elsene", 87),
    (21016, "Ukkel", 84),
    (21018, "Sint-Lambrechts-Woluwe", 58),
    (21007, "Vorst (Brussel-Hoofdstad)", 57),
    (21010, "Jette", 53),
    (21013, "Sint-Gillis", 50),
    (21005, "Etterbeek", 48),
    (21006, "Evere", 44),
    (21019, "Sint-Pieters-Woluwe", 42),
    (21002, "Oudergem", 35),
    (21014, "Sint-Joost-ten-Node", 27),
    (21003, "Sint-Agatha-Berchem", 25),
    (21008, "Ganshoren", 25),
    (21017, "Watermaal-Bosvoorde", 25),
    (21011, "Koekelberg", 22),
    // Wallonia: the cities.
    (52011, "Charleroi", 203),
    (62063, "Luik", 197),
    (92094, "Namen", 113),
    (53053, "Bergen", 96),
    (58001, "La Louvière", 81),
    (57081, "Doornik", 69),
    (62096, "Seraing", 65),
    (57096, "Moeskroen", 59),
    (63079, "Verviers", 55),
    (25014, "Eigenbrakel", 41),
    (25112, "Waver", 35),
];

/// The weight of a municipality for drawing simulated life events: roughly its population in
/// thousands.
///
/// **An approximation, not statistics.** About 60 large municipalities (the Flemish and
/// Walloon cities, all of Brussels) have a rounded 2024 population from memory of Statbel's
/// figures; every other municipality weighs 15 in Flanders and 10 in Wallonia, near the
/// typical size of the smaller municipalities there. The regional totals come out near the
/// real ones (about 6.7, 3.5 and 1.2 million). Use it to generate realistic test traffic,
/// never to report anything.
pub fn weight(municipality: &Municipality) -> u32 {
    APPROX_POPULATION_THOUSANDS
        .iter()
        .find(|(code, _, _)| *code == municipality.nis_code.get())
        .map_or(
            match municipality.region {
                Region::Wallonia => 10,
                Region::Flanders | Region::Brussels => 15,
            },
            |(_, _, thousands)| *thousands,
        )
}

/// Municipalities with the running total of their weights, for drawing by weight.
type Cumulative = Vec<(u64, &'static Municipality)>;

fn cumulative(municipalities: impl Iterator<Item = &'static Municipality>) -> Cumulative {
    let mut total = 0u64;
    municipalities
        .map(|m| {
            total += u64::from(weight(m));
            (total, m)
        })
        .collect()
}

static PICK_ALL: LazyLock<Cumulative> = LazyLock::new(|| cumulative(all().iter()));
static PICK_REGION: LazyLock<[Cumulative; 3]> = LazyLock::new(|| {
    [
        cumulative(in_region(Region::Flanders)),
        cumulative(in_region(Region::Wallonia)),
        cumulative(in_region(Region::Brussels)),
    ]
});

fn pick_from(pool: &'static Cumulative, u: f64) -> &'static Municipality {
    // Out-of-range input is clamped rather than rejected: the caller's random source is
    // trusted, and a panic in a load generator helps nobody.
    let u = if u.is_finite() {
        u.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let total = pool.last().map_or(0, |(end, _)| *end);
    let target = ((u * total as f64) as u64).min(total.saturating_sub(1));
    let at = pool.partition_point(|(end, _)| *end <= target);
    // The pools are never empty (parsing checks every region has a municipality), and
    // `target < total` keeps `at` in range.
    pool[at.min(pool.len() - 1)].1
}

/// Draws a municipality with probability proportional to its [`weight`], all regions.
///
/// `u` is the caller's uniform random number in `[0, 1)` (values outside are clamped), so the
/// draw is deterministic and this crate needs no random number generator.
pub fn pick(u: f64) -> &'static Municipality {
    pick_from(&PICK_ALL, u)
}

/// As [`pick`], among the municipalities of one region.
pub fn pick_in(region: Region, u: f64) -> &'static Municipality {
    let pools: &'static [Cumulative; 3] = &PICK_REGION;
    let pool = match region {
        Region::Flanders => &pools[0],
        Region::Wallonia => &pools[1],
        Region::Brussels => &pools[2],
    };
    pick_from(pool, u)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_embedded_data_parses_with_the_documented_counts() {
        let municipalities = parse_municipalities(MUNICIPALITIES_CSV).unwrap();
        assert_eq!(municipalities.len(), 565);
        assert_eq!(parse_mergers(MERGERS_CSV).unwrap().len(), 30);
        assert_eq!(all().len(), 565);
        assert_eq!(mergers().len(), 30);
    }

    #[test]
    fn codes_are_unique_and_sorted() {
        let codes: Vec<NisCode> = all().iter().map(|m| m.nis_code).collect();
        assert!(codes.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn counts_per_region_and_province() {
        assert_eq!(flemish().count(), 285);
        assert_eq!(in_region(Region::Wallonia).count(), 261);
        assert_eq!(in_region(Region::Brussels).count(), 19);
        assert!(in_region(Region::Brussels).all(|m| m.province.is_none()));
        let in_province = |p: u32| {
            all()
                .iter()
                .filter(|m| m.province.map(NisCode::get) == Some(p))
                .count()
        };
        for (province, count) in [
            (10000, 67),
            (20001, 63),
            (30000, 62),
            (40000, 55),
            (70000, 38),
            (20002, 27),
            (50000, 69),
            (60000, 84),
            (80000, 43),
            (90000, 38),
        ] {
            assert_eq!(in_province(province), count, "province {province}");
        }
    }

    #[test]
    fn every_merger_leads_to_a_current_municipality() {
        for merger in mergers() {
            let new = lookup_code(merger.new_code).unwrap();
            assert_eq!(new.name_nl, merger.new_name_nl, "{merger:?}");
            assert_eq!(new.nis_code, merger.new_code);
        }
        // Every old code but Antwerpen's is retired.
        let current: Vec<_> = mergers()
            .iter()
            .filter(|m| lookup_code(m.old_code).is_ok())
            .map(|m| m.old_code.get())
            .collect();
        assert_eq!(current, [11002]);
        let distinct: HashSet<_> = mergers().iter().map(|m| m.old_code).collect();
        assert_eq!(distinct.len(), 30);
    }

    #[test]
    fn lookup_current_code() {
        let gent = lookup("44021").unwrap();
        assert_eq!(gent.name_nl, "Gent");
        assert_eq!(gent.name_fr, "Gand");
        assert_eq!(gent.region, Region::Flanders);
        assert_eq!(gent.province, NisCode::parse("40000").ok());
        assert_eq!(gent.arrondissement, NisCode::parse("44000").unwrap());
        let antwerpen = lookup("11002").unwrap();
        assert_eq!(antwerpen.name_nl, "Antwerpen");
        let hasselt = lookup("71072").unwrap();
        assert_eq!(hasselt.valid_from, MERGER_DATE);
    }

    #[test]
    fn lookup_merged_away_code_names_the_successor() {
        let error = lookup("44012").unwrap_err();
        assert_eq!(
            error,
            MunicipalityError::MergedAway {
                old: "44012".into(),
                old_name: "De Pinte",
                new_code: NisCode::parse("44086").unwrap(),
                new_name: "Nazareth-De Pinte",
            }
        );
        assert_eq!(
            error.to_string(),
            "NIS code 44012 (De Pinte) was merged into 44086 Nazareth-De Pinte on 2025-01-01; \
             use 44086"
        );
        // Zwijndrecht moved province as well.
        assert!(matches!(
            lookup("11056"),
            Err(MunicipalityError::MergedAway {
                new_name: "Beveren-Kruibeke-Zwijndrecht",
                ..
            })
        ));
        assert!(
            lookup("11007")
                .unwrap_err()
                .to_string()
                .contains("Antwerpen")
        );
    }

    #[test]
    fn lookup_unknown_and_malformed_codes() {
        assert_eq!(
            lookup("99999"),
            Err(MunicipalityError::Unknown {
                code: "99999".into()
            })
        );
        for bad in ["", "1100", "110022", "11O02", " 1100", "١١٠٠٢"] {
            assert!(
                matches!(lookup(bad), Err(MunicipalityError::Malformed { .. })),
                "{bad:?}"
            );
        }
        let long = "x".repeat(1000);
        let Err(MunicipalityError::Malformed { code }) = lookup(&long) else {
            panic!("expected Malformed");
        };
        assert_eq!(code.len(), 16);
    }

    #[test]
    fn display_names_drop_the_qualifier() {
        assert_eq!(lookup("41002").unwrap().display_name_nl(), "Aalst");
        assert_eq!(lookup("21007").unwrap().display_name_nl(), "Vorst");
        assert_eq!(lookup("44021").unwrap().display_name_nl(), "Gent");
    }

    #[test]
    fn population_table_codes_match_their_names() {
        let mut seen = HashSet::new();
        for (code, name, thousands) in APPROX_POPULATION_THOUSANDS {
            let m = lookup(&format!("{code:05}")).unwrap();
            assert_eq!(m.name_nl, *name, "code {code}");
            assert!(seen.insert(code), "{code} listed twice");
            assert_eq!(weight(m), *thousands);
            assert!(*thousands > 15);
        }
        assert_eq!(weight(lookup("11001").unwrap()), 15); // Aartselaar
        assert_eq!(weight(lookup("82039").unwrap()), 10); // Bastenaken
        // The regional totals are near the real populations (in thousands).
        let total = |r| in_region(r).map(weight).sum::<u32>();
        assert!((6_300..7_100).contains(&total(Region::Flanders)));
        assert!((3_300..3_900).contains(&total(Region::Wallonia)));
        assert!((1_150..1_350).contains(&total(Region::Brussels)));
    }

    #[test]
    fn pick_gives_each_municipality_its_weight_of_the_range() {
        let total: u32 = all().iter().map(weight).sum();
        let mut hits = std::collections::HashMap::new();
        for i in 0..total {
            let u = (f64::from(i) + 0.5) / f64::from(total);
            *hits.entry(pick(u).nis_code).or_insert(0u32) += 1;
        }
        assert_eq!(hits.len(), 565);
        for m in all() {
            assert_eq!(hits[&m.nis_code], weight(m), "{}", m.name_nl);
        }
    }

    #[test]
    fn pick_is_deterministic_and_clamps() {
        for u in [0.0, 0.123, 0.5, 0.999_999] {
            assert_eq!(pick(u), pick(u));
        }
        assert_eq!(pick(0.0).nis_code.get(), 11001);
        assert_eq!(pick(-1.0), pick(0.0));
        assert_eq!(pick(f64::NAN), pick(0.0));
        assert_eq!(pick(1.0), all().last().unwrap());
        assert_eq!(pick(2.0), all().last().unwrap());
        // Antwerpen, the heaviest, sits right after Aartselaar.
        assert_eq!(pick(20.0 / 11_500.0).name_nl, "Antwerpen");
    }

    #[test]
    fn pick_in_stays_in_the_region() {
        for region in [Region::Flanders, Region::Wallonia, Region::Brussels] {
            for i in 0..1000 {
                let u = f64::from(i) / 1000.0;
                assert_eq!(pick_in(region, u).region, region);
            }
        }
    }
}
