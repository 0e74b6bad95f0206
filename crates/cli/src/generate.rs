//! Realistic life events for the registry simulator (`levensloop simulate`, `levensloop publish`).
//!
//! A [`Generator`] is deterministic: the same seed, `today` and source give the same events in
//! the same order. Every valid event it makes is one the gateway must accept:
//!
//! - INSZ numbers are made from the person's real birth date with [`Insz::generate`] (correct
//!   check digits before and from 2000 on), the serial's parity matching the gender (odd male,
//!   even female), a small share of bis numbers (month + 40) for people from abroad. No number
//!   is handed out twice by one generator, so no simulated person dies twice or moves after
//!   dying.
//! - Municipalities are drawn by population weight with [`municipality::pick`] and
//!   [`municipality::pick_in`] (mostly Flemish); every NIS code passes [`municipality::lookup`].
//! - Dates hang together relative to `today`: births in the last 14 days, declared within 15
//!   days, parents 20–45 years older; deaths in the last 3 days of people aged 40–100; moves
//!   in the last 8 working days, declared on or after the move; driving exams in the last 7
//!   days by candidates aged 17–30. Nothing lies after `today`.
//!
//! [`Generator::invalid`] breaks a valid event in one realistic way and names the reason code
//! the gateway is expected to answer with.
//!
//! Approximations, on purpose: post codes are plausible for the municipality's arrondissement
//! (exact for the larger cities), never looked up; exam centres are modelled on the Flemish
//! GOCA centres, names and places approximate; doctors' RIZIV numbers have the right shape
//! only. Weekends count as non-working days, public holidays do not.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, Days, Months, NaiveDate, NaiveTime, Weekday};
use levensloop_proto::types::Timestamp;
use levensloop_proto::v1::life_event::Payload;
use levensloop_proto::{event_types, v1};
use levensloop_reference::municipality::{self, Municipality, MunicipalityError, Region};
use levensloop_reference::{BisKind, Insz, InszError, Sex};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

// ---------------------------------------------------------------------------------------------
// Kinds and the mix
// ---------------------------------------------------------------------------------------------

/// The four life events the simulator produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A birth (DABS birth act).
    Birth,
    /// A death (digital death declaration).
    Death,
    /// A change of address (population register).
    Move,
    /// A passed driving exam (GOCA exam centre).
    DrivingExam,
}

impl Kind {
    /// Every kind, in the order of the default mix.
    pub const ALL: [Kind; 4] = [Kind::Birth, Kind::Death, Kind::Move, Kind::DrivingExam];

    /// The name used on the command line and in event ids: `birth`, `death`, `move`,
    /// `driving-exam`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Birth => "birth",
            Kind::Death => "death",
            Kind::Move => "move",
            Kind::DrivingExam => "driving-exam",
        }
    }

    /// The CloudEvents `type` of this kind's events.
    pub fn event_type(self) -> &'static str {
        match self {
            Kind::Birth => event_types::BIRTH,
            Kind::Death => event_types::DEATH,
            Kind::Move => event_types::CHANGE_OF_ADDRESS,
            Kind::DrivingExam => event_types::DRIVING_EXAM_PASSED,
        }
    }

    fn index(self) -> usize {
        match self {
            Kind::Birth => 0,
            Kind::Death => 1,
            Kind::Move => 2,
            Kind::DrivingExam => 3,
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A life event kind that is not one of `birth`, `death`, `move`, `driving-exam`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKind(pub String);

impl fmt::Display for UnknownKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown life event kind {:?}: expected birth, death, move or driving-exam",
            self.0
        )
    }
}

impl std::error::Error for UnknownKind {}

impl FromStr for Kind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// How often each kind is drawn: relative, non-negative whole weights, not all zero.
///
/// Parsed from `birth=25,death=25,move=40,driving-exam=10`; kinds left out weigh 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 4],
}

impl Mix {
    /// The weight of one kind.
    pub fn weight(&self, kind: Kind) -> u32 {
        self.weights.get(kind.index()).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.weights.iter().map(|w| u64::from(*w)).sum()
    }
}

impl Default for Mix {
    /// `birth=25,death=25,move=40,driving-exam=10`.
    fn default() -> Self {
        Mix {
            weights: [25, 25, 40, 10],
        }
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, kind) in Kind::ALL.into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{kind}={}", self.weight(kind))?;
        }
        Ok(())
    }
}

/// Why a mix string does not parse. Each variant names the offending part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MixError {
    /// Nothing but separators.
    Empty,
    /// An item without `=`.
    MissingWeight {
        /// The item as written.
        item: String,
    },
    /// A kind that is not birth, death, move or driving-exam.
    UnknownKind {
        /// The kind as written.
        kind: String,
    },
    /// A weight that is not a whole number from 0 to 4294967295.
    BadWeight {
        /// The kind it belongs to.
        kind: Kind,
        /// The weight as written.
        weight: String,
    },
    /// The same kind twice.
    Duplicate {
        /// The kind.
        kind: Kind,
    },
    /// Every weight is 0: nothing could be drawn.
    AllZero,
}

impl fmt::Display for MixError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const EXAMPLE: &str = "e.g. birth=25,death=25,move=40,driving-exam=10";
        match self {
            MixError::Empty => write!(f, "the mix is empty: give kind=weight pairs, {EXAMPLE}"),
            MixError::MissingWeight { item } => {
                write!(
                    f,
                    "mix item {item:?} has no weight: write kind=weight, {EXAMPLE}"
                )
            }
            MixError::UnknownKind { kind } => write!(
                f,
                "unknown life event kind {kind:?} in the mix: expected birth, death, move or \
                 driving-exam"
            ),
            MixError::BadWeight { kind, weight } => write!(
                f,
                "weight {weight:?} for {kind} is not a whole number >= 0 (weights are relative, \
                 {EXAMPLE})"
            ),
            MixError::Duplicate { kind } => write!(f, "{kind} appears twice in the mix"),
            MixError::AllZero => write!(
                f,
                "every weight in the mix is 0: give at least one kind a positive weight"
            ),
        }
    }
}

impl std::error::Error for MixError {}

impl FromStr for Mix {
    type Err = MixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut weights = [0u32; 4];
        let mut seen = [false; 4];
        let mut any = false;
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            any = true;
            let Some((kind, weight)) = item.split_once('=') else {
                return Err(MixError::MissingWeight {
                    item: item.to_owned(),
                });
            };
            let kind: Kind = kind.trim().parse().map_err(|_| MixError::UnknownKind {
                kind: kind.trim().to_owned(),
            })?;
            let weight = weight.trim();
            let value: u32 = weight.parse().map_err(|_| MixError::BadWeight {
                kind,
                weight: weight.to_owned(),
            })?;
            let i = kind.index();
            if seen.get(i).copied().unwrap_or(false) {
                return Err(MixError::Duplicate { kind });
            }
            if let (Some(slot), Some(flag)) = (weights.get_mut(i), seen.get_mut(i)) {
                *slot = value;
                *flag = true;
            }
        }
        if !any {
            return Err(MixError::Empty);
        }
        let mix = Mix { weights };
        if mix.total() == 0 {
            return Err(MixError::AllZero);
        }
        Ok(mix)
    }
}

// ---------------------------------------------------------------------------------------------
// Defects
// ---------------------------------------------------------------------------------------------

/// One realistic way an event can be wrong, named by the gateway's reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Defect {
    /// A typo in the subject's INSZ that the check digits catch.
    InszCheckDigits,
    /// The subject's date of birth differs from the one the INSZ encodes.
    InszBirthDateMismatch,
    /// A date well after today (a year typo, a move declared in advance).
    DateInFuture,
    /// A death dated before the birth.
    DeathBeforeBirth,
    /// A candidate who was not yet 17 on the exam date.
    ExamBeforeMinimumAge,
    /// A NIS code retired by the 2025 mergers.
    MunicipalityMerged,
    /// A well-formed NIS code that no municipality has (a typo).
    MunicipalityUnknown,
    /// A required person, date or address left out.
    MissingField,
}

impl Defect {
    /// Every defect.
    pub const ALL: [Defect; 8] = [
        Defect::InszCheckDigits,
        Defect::InszBirthDateMismatch,
        Defect::DateInFuture,
        Defect::DeathBeforeBirth,
        Defect::ExamBeforeMinimumAge,
        Defect::MunicipalityMerged,
        Defect::MunicipalityUnknown,
        Defect::MissingField,
    ];

    /// The reason code the gateway is expected to reject with.
    pub fn code(self) -> &'static str {
        match self {
            Defect::InszCheckDigits => "INSZ_CHECK_DIGITS",
            Defect::InszBirthDateMismatch => "INSZ_BIRTH_DATE_MISMATCH",
            Defect::DateInFuture => "DATE_IN_FUTURE",
            Defect::DeathBeforeBirth => "DEATH_BEFORE_BIRTH",
            Defect::ExamBeforeMinimumAge => "EXAM_BEFORE_MINIMUM_AGE",
            Defect::MunicipalityMerged => "MUNICIPALITY_MERGED",
            Defect::MunicipalityUnknown => "MUNICIPALITY_UNKNOWN",
            Defect::MissingField => "MISSING_FIELD",
        }
    }

    /// Whether events of this kind can carry the defect.
    pub fn applies_to(self, kind: Kind) -> bool {
        match self {
            Defect::DeathBeforeBirth => kind == Kind::Death,
            Defect::ExamBeforeMinimumAge => kind == Kind::DrivingExam,
            _ => true,
        }
    }
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

// ---------------------------------------------------------------------------------------------
// Reference lists
// ---------------------------------------------------------------------------------------------

const FAMILY_NAMES: &[&str] = &[
    "Peeters",
    "Janssens",
    "Maes",
    "Jacobs",
    "Mertens",
    "Willems",
    "Claes",
    "Goossens",
    "Wouters",
    "De Smet",
    "Vermeulen",
    "Van den Broeck",
    "Hermans",
    "Michiels",
    "Aerts",
    "Lambrechts",
    "Pauwels",
    "De Vos",
    "Verstraete",
    "Van Damme",
    "De Clercq",
    "Hendrickx",
    "Van Dyck",
    "Martens",
    "Smets",
    "Coppens",
    "Stevens",
    "Verhoeven",
    "Leemans",
    "De Backer",
    "Vandenberghe",
    "Segers",
    "Van de Velde",
    "Cools",
    "Wuyts",
    "Verbruggen",
    "Bogaerts",
    "Vermeersch",
    "Geerts",
    "De Wilde",
    "Van Acker",
    "Baert",
    "Claeys",
    "Thys",
    "Moens",
    "Desmet",
    "Van Hecke",
    "Declercq",
];

/// Given names by generation: (born from 2000, born 1965–1999, born before 1965).
const GIVEN_FEMALE: [&[&str]; 3] = [
    &[
        "Emma", "Louise", "Olivia", "Mila", "Nora", "Elena", "Lina", "Ella", "Marie", "Julia",
        "Noor", "Lotte", "Fien", "Hanne", "Lore", "Amber", "Lisa", "Anna", "Mia", "Juliette",
        "Liv", "Ona", "Stien", "Jana",
    ],
    &[
        "Sofie", "Els", "Katrien", "Lien", "Nathalie", "Sarah", "Evelien", "Ann", "Kelly", "Leen",
        "Inge", "Veerle", "Tine", "Elke", "Joke", "Griet", "Hilde", "Caroline", "Stefanie", "Nele",
        "An", "Sandra",
    ],
    &[
        "Maria",
        "Godelieve",
        "Paula",
        "Jeanne",
        "Josée",
        "Rita",
        "Monique",
        "Lutgarde",
        "Agnes",
        "Simonne",
        "Julienne",
        "Hilda",
        "Christiane",
        "Rosa",
        "Mariette",
        "Denise",
        "Yvonne",
        "Irène",
        "Georgette",
        "Rachel",
    ],
];

const GIVEN_MALE: [&[&str]; 3] = [
    &[
        "Noah", "Arthur", "Jules", "Louis", "Lucas", "Liam", "Adam", "Finn", "Victor", "Mats",
        "Leon", "Vic", "Lars", "Seppe", "Wout", "Ruben", "Milan", "Lowie", "Stan", "Warre", "Nand",
        "Mathis", "Rune", "Kobe",
    ],
    &[
        "Tom", "Pieter", "Kevin", "Bart", "Steven", "Kristof", "Jeroen", "Wim", "Koen", "Dries",
        "Stijn", "Joris", "Geert", "Frederik", "Sven", "Tim", "Jan", "Dirk", "Peter", "Nick",
        "Luc", "Wouter",
    ],
    &[
        "Jozef", "Frans", "Marcel", "Willy", "André", "Roger", "Gustaaf", "Lucien", "Julien",
        "Georges", "Raymond", "Albert", "Karel", "Etienne", "Walter", "Florent", "Hendrik",
        "Gilbert", "Maurice", "Omer",
    ],
];

/// People of another nationality (alone or beside the Belgian one): the country, and a few
/// names common there.
#[derive(Debug)]
struct Origin {
    country: &'static str,
    family: &'static [&'static str],
    male: &'static [&'static str],
    female: &'static [&'static str],
}

const ORIGINS: &[Origin] = &[
    Origin {
        country: "NL",
        family: &["de Jong", "Jansen", "de Vries", "Bakker", "Visser"],
        male: &["Daan", "Sem", "Bram", "Jeroen", "Thijs"],
        female: &["Sanne", "Anouk", "Fleur", "Femke", "Iris"],
    },
    Origin {
        country: "MA",
        family: &["El Amrani", "Benali", "El Idrissi", "Bouzid", "Ait Ali"],
        male: &["Mohamed", "Youssef", "Amine", "Bilal", "Ayoub"],
        female: &["Fatima", "Salma", "Imane", "Yasmina", "Nadia"],
    },
    Origin {
        country: "TR",
        family: &["Yılmaz", "Kaya", "Demir", "Şahin", "Çelik"],
        male: &["Emre", "Mehmet", "Burak", "Yusuf", "Kerem"],
        female: &["Zeynep", "Elif", "Ayşe", "Merve", "Esra"],
    },
    Origin {
        country: "PL",
        family: &["Nowak", "Kowalski", "Wiśniewski", "Wójcik", "Kamiński"],
        male: &["Piotr", "Tomasz", "Jakub", "Kamil", "Marek"],
        female: &["Anna", "Katarzyna", "Magdalena", "Agnieszka", "Zofia"],
    },
    Origin {
        country: "RO",
        family: &["Popescu", "Ionescu", "Popa", "Stan", "Dumitru"],
        male: &["Andrei", "Alexandru", "Mihai", "Ionuț", "Florin"],
        female: &["Ioana", "Elena", "Andreea", "Cristina", "Alina"],
    },
    Origin {
        country: "IT",
        family: &["Rossi", "Russo", "Ferrari", "Esposito", "Romano"],
        male: &["Marco", "Luca", "Giuseppe", "Matteo", "Salvatore"],
        female: &["Giulia", "Francesca", "Chiara", "Sara", "Rosa"],
    },
    Origin {
        country: "FR",
        family: &["Martin", "Bernard", "Dubois", "Lefèvre", "Moreau"],
        male: &["Lucas", "Hugo", "Théo", "Julien", "Nicolas"],
        female: &["Camille", "Léa", "Chloé", "Manon", "Céline"],
    },
    Origin {
        country: "DE",
        family: &["Müller", "Schmidt", "Schneider", "Fischer", "Weber"],
        male: &["Lukas", "Jonas", "Felix", "Tobias", "Stefan"],
        female: &["Lena", "Hannah", "Katharina", "Julia", "Sabine"],
    },
];

/// Origins of people with a bis number: cross-border and posted workers from the neighbours
/// and from Central Europe (indices into [`ORIGINS`]: NL, PL, RO, FR, DE).
const BIS_ORIGINS: [usize; 5] = [0, 3, 4, 6, 7];

const FLEMISH_STREETS: &[&str] = &[
    "Kerkstraat",
    "Stationsstraat",
    "Dorpsstraat",
    "Molenstraat",
    "Nieuwstraat",
    "Schoolstraat",
    "Kapelstraat",
    "Beekstraat",
    "Veldstraat",
    "Hoogstraat",
    "Lindelaan",
    "Kastanjelaan",
    "Bosstraat",
    "Kloosterstraat",
    "Langestraat",
    "Heirbaan",
    "Zandstraat",
    "Populierenlaan",
    "Berkenlaan",
    "Heidestraat",
    "Broekstraat",
    "Ringlaan",
    "Tuinstraat",
    "Nachtegaalstraat",
    "Meidoornlaan",
    "Koning Albertlaan",
    "Leopoldlaan",
    "Sint-Jansstraat",
    "Pastorijstraat",
    "Gemeenteplein",
    "Markt",
    "Kouter",
    "Vijverstraat",
    "Akkerstraat",
    "Weverstraat",
    "Hofstraat",
    "Driesstraat",
    "Processieweg",
];

const BRUSSELS_STREETS: &[&str] = &[
    "Nieuwstraat",
    "Koningsstraat",
    "Hoogstraat",
    "Vlaamsesteenweg",
    "Kerkstraat",
    "Stationsstraat",
    "Waversesteenweg",
    "Haachtsesteenweg",
    "Ninoofsesteenweg",
    "Bergensesteenweg",
    "Leuvensesteenweg",
    "Alsembergsesteenweg",
    "Louizalaan",
    "Jetsesteenweg",
];

const WALLOON_STREETS: &[&str] = &[
    "Rue de l'Église",
    "Rue de la Station",
    "Rue du Moulin",
    "Rue Haute",
    "Rue Neuve",
    "Place communale",
    "Avenue des Tilleuls",
    "Rue des Écoles",
    "Rue du Centre",
    "Chaussée de Bruxelles",
    "Rue de la Chapelle",
    "Rue du Château",
    "Avenue de la Gare",
    "Rue des Champs",
    "Rue Saint-Martin",
];

/// The main post code of the larger municipalities, by NIS code. Everything else gets a post
/// code in its arrondissement's range (see [`post_code`]). Not looked up: plausible, not
/// authoritative.
const KNOWN_POST_CODES: &[(u32, u16)] = &[
    (11002, 2000),
    (44021, 9000),
    (31005, 8000),
    (24062, 3000),
    (41002, 9300),
    (71072, 3500),
    (12025, 2800),
    (46030, 9120),
    (46021, 9100),
    (34022, 8500),
    (35013, 8400),
    (71016, 3600),
    (36015, 8800),
    (46029, 9160),
    (71004, 3580),
    (42006, 9200),
    (13040, 2300),
    (23088, 1800),
    (44083, 9800),
    (12014, 2220),
    (23016, 1700),
    (73110, 3740),
    (73111, 3700),
    (13008, 2440),
    (71053, 3800),
    (23027, 1500),
    (41048, 9400),
    (11008, 2930),
    (34040, 8790),
    (23025, 1850),
    (73107, 3630),
    (44088, 9820),
    (13025, 2400),
    (24055, 3070),
    (44086, 9810),
    (44087, 9080),
    (37021, 8750),
    (37022, 8700),
    (23106, 1570),
    (71071, 3980),
    (21004, 1000),
    (21015, 1030),
    (21001, 1070),
    (21012, 1080),
    (21009, 1050),
    (21016, 1180),
    (21018, 1200),
    (21007, 1190),
    (21010, 1090),
    (21013, 1060),
    (21005, 1040),
    (21006, 1140),
    (21019, 1150),
    (21002, 1160),
    (21014, 1210),
    (21003, 1082),
    (21008, 1083),
    (21017, 1170),
    (21011, 1081),
    (52011, 6000),
    (62063, 4000),
    (92094, 5000),
    (53053, 7000),
    (58001, 7100),
    (57081, 7500),
    (62096, 4100),
    (57096, 7700),
    (63079, 4800),
    (25014, 1420),
    (25112, 1300),
    // The municipalities merged away on 2025-01-01, for re-addressings and stale codes.
    (11007, 2150),
    (23023, 1570),
    (23024, 1755),
    (23032, 1540),
    (37012, 8755),
    (37018, 8750),
    (37007, 8760),
    (37015, 8700),
    (44012, 9840),
    (44048, 9810),
    (44034, 9080),
    (44073, 9185),
    (44040, 9090),
    (44043, 9820),
    (44045, 9180),
    (46014, 9160),
    (11056, 2070),
    (46003, 9120),
    (46013, 9150),
    (71057, 3980),
    (71069, 3945),
    (71022, 3500),
    (73040, 3720),
    (73006, 3740),
    (73032, 3730),
    (73009, 3840),
    (73083, 3700),
    (82003, 6600),
    (82005, 6687),
];

/// Post code ranges by arrondissement (the first two digits of the NIS code).
const POST_CODE_RANGES: &[(u32, u16, u16)] = &[
    (11, 2000, 2990),
    (12, 2500, 2890),
    (13, 2200, 2490),
    (21, 1000, 1210),
    (23, 1500, 1980),
    (24, 3000, 3470),
    (25, 1300, 1490),
    (31, 8000, 8380),
    (32, 8600, 8690),
    (33, 8900, 8980),
    (34, 8500, 8580),
    (35, 8400, 8490),
    (36, 8800, 8890),
    (37, 8700, 8780),
    (38, 8620, 8690),
    (41, 9300, 9470),
    (42, 9200, 9290),
    (43, 9900, 9990),
    (44, 9000, 9960),
    (45, 9600, 9790),
    (46, 9100, 9190),
    (51, 7800, 7890),
    (52, 6000, 6280),
    (53, 7000, 7390),
    (55, 7060, 7190),
    (56, 6500, 6590),
    (57, 7500, 7760),
    (58, 7100, 7170),
    (61, 4500, 4590),
    (62, 4000, 4690),
    (63, 4700, 4990),
    (64, 4250, 4370),
    (71, 3500, 3590),
    (72, 3900, 3990),
    (73, 3700, 3790),
    (81, 6700, 6790),
    (82, 6600, 6690),
    (83, 6900, 6990),
    (84, 6800, 6890),
    (85, 6750, 6769),
    (91, 5500, 5590),
    (92, 5000, 5380),
    (93, 5600, 5680),
];

/// A driving exam centre.
#[derive(Debug)]
struct Centre {
    code: &'static str,
    name: &'static str,
    nis: &'static str,
}

/// Exam centres modelled on the Flemish GOCA centres (practical exams). Names, codes and
/// places are approximate; every NIS code is a current municipality (a test checks).
const EXAM_CENTRES: &[Centre] = &[
    Centre {
        code: "GOCA-DEU",
        name: "Examencentrum Deurne",
        nis: "11002",
    },
    Centre {
        code: "GOCA-KON",
        name: "Examencentrum Kontich",
        nis: "11024",
    },
    Centre {
        code: "GOCA-GEE",
        name: "Examencentrum Geel",
        nis: "13008",
    },
    Centre {
        code: "GOCA-MEC",
        name: "Examencentrum Mechelen",
        nis: "12025",
    },
    Centre {
        code: "GOCA-KTB",
        name: "Examencentrum Kortenberg",
        nis: "24055",
    },
    Centre {
        code: "GOCA-HAA",
        name: "Examencentrum Haasrode",
        nis: "24086",
    },
    Centre {
        code: "GOCA-SPL",
        name: "Examencentrum Sint-Pieters-Leeuw",
        nis: "23077",
    },
    Centre {
        code: "GOCA-BRU",
        name: "Examencentrum Brugge",
        nis: "31005",
    },
    Centre {
        code: "GOCA-OOS",
        name: "Examencentrum Oostende",
        nis: "35013",
    },
    Centre {
        code: "GOCA-HEU",
        name: "Examencentrum Heule",
        nis: "34022",
    },
    Centre {
        code: "GOCA-SDW",
        name: "Examencentrum Sint-Denijs-Westrem",
        nis: "44021",
    },
    Centre {
        code: "GOCA-ERE",
        name: "Examencentrum Erembodegem",
        nis: "41002",
    },
    Centre {
        code: "GOCA-SNK",
        name: "Examencentrum Sint-Niklaas",
        nis: "46021",
    },
    Centre {
        code: "GOCA-BRA",
        name: "Examencentrum Brakel",
        nis: "45059",
    },
    Centre {
        code: "GOCA-ALK",
        name: "Examencentrum Alken",
        nis: "73001",
    },
    Centre {
        code: "GOCA-BRE",
        name: "Examencentrum Bree",
        nis: "72004",
    },
];

// ---------------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------------

/// `today` is kept in this range so every birth date the generator makes (up to 101 years
/// back, a year ahead for a future-date defect) can be encoded in an INSZ (1900–2099).
const EARLIEST_TODAY: NaiveDate = match NaiveDate::from_ymd_opt(2010, 1, 1) {
    Some(d) => d,
    None => panic!("2010-01-01 is a date"),
};
const LATEST_TODAY: NaiveDate = match NaiveDate::from_ymd_opt(2098, 6, 30) {
    Some(d) => d,
    None => panic!("2098-06-30 is a date"),
};

fn days_before(date: NaiveDate, days: u64) -> NaiveDate {
    date.checked_sub_days(Days::new(days)).unwrap_or(date)
}

fn days_after(date: NaiveDate, days: u64) -> NaiveDate {
    date.checked_add_days(Days::new(days)).unwrap_or(date)
}

fn years_before(date: NaiveDate, years: u32) -> NaiveDate {
    date.checked_sub_months(Months::new(years.saturating_mul(12)))
        .unwrap_or(date)
}

fn days_between(from: NaiveDate, to: NaiveDate) -> u64 {
    u64::try_from((to - from).num_days()).unwrap_or(0)
}

fn is_working_day(date: NaiveDate) -> bool {
    !matches!(date.weekday(), Weekday::Sat | Weekday::Sun)
}

/// The first day of the window of the last `n` working days up to `today` (today counts
/// when it is a working day). Weekends are skipped; public holidays are not.
fn working_days_back(today: NaiveDate, n: u32) -> NaiveDate {
    let mut date = today;
    let mut counted = 0;
    for _ in 0..(n * 2 + 7) {
        if is_working_day(date) {
            counted += 1;
            if counted >= n {
                return date;
            }
        }
        date = days_before(date, 1);
    }
    date
}

// ---------------------------------------------------------------------------------------------
// Places
// ---------------------------------------------------------------------------------------------

/// The name of a municipality as an address in its region writes it.
fn place_name(m: &Municipality) -> &'static str {
    match m.region {
        Region::Wallonia => strip_qualifier(m.name_fr),
        Region::Flanders | Region::Brussels => m.display_name_nl(),
    }
}

/// `Aalst (Aalst)` → `Aalst`.
fn strip_qualifier(name: &'static str) -> &'static str {
    match name.find(" (") {
        Some(at) if name.ends_with(')') => name.get(..at).unwrap_or(name),
        _ => name,
    }
}

/// A plausible post code for a municipality: its main post code for the larger ones, else one
/// in its arrondissement's range, the same every time. Not looked up in bpost's list.
fn post_code(nis: u32) -> String {
    if let Some((_, code)) = KNOWN_POST_CODES.iter().find(|(n, _)| *n == nis) {
        return code.to_string();
    }
    let arrondissement = nis / 1000;
    let (low, high) = POST_CODE_RANGES
        .iter()
        .find(|(a, _, _)| *a == arrondissement)
        .map_or((1000, 9990), |(_, low, high)| (*low, *high));
    let steps = u32::from((high - low) / 10) + 1;
    // Multiply by a prime so neighbouring NIS codes land apart.
    let step = (nis.wrapping_mul(7919) % steps) as u16;
    (low + step * 10).to_string()
}

fn streets_of(region: Region) -> &'static [&'static str] {
    match region {
        Region::Flanders => FLEMISH_STREETS,
        Region::Brussels => BRUSSELS_STREETS,
        Region::Wallonia => WALLOON_STREETS,
    }
}

// ---------------------------------------------------------------------------------------------
// The generator
// ---------------------------------------------------------------------------------------------

/// Serial numbers per sex per birth date: 001–997 odd, 002–998 even.
const SERIALS_PER_SEX: u16 = 499;

/// Deterministic maker of realistic life events.
#[derive(Debug)]
pub struct Generator {
    rng: StdRng,
    seed: u64,
    today: NaiveDate,
    source: String,
    /// Events made so far; the next event's id ends in `counter + 1`.
    counter: u64,
    /// Every INSZ handed out, so no number is used for two people.
    used: HashSet<Insz>,
    /// Serials handed out per (birth date, bis month offset, male), to skip full dates fast.
    taken: HashMap<(NaiveDate, u8, bool), u16>,
    /// The second child of a twin birth, published as the next birth.
    pending_twin: Option<v1::Birth>,
}

impl Generator {
    /// A generator for events as a registry would publish them on `today` from `source`.
    ///
    /// `today` is clamped to 2010-01-01..=2098-06-30, where every date the generator makes can
    /// be encoded in an INSZ.
    pub fn new(seed: u64, today: NaiveDate, source: String) -> Self {
        Generator {
            rng: StdRng::seed_from_u64(seed),
            seed,
            today: today.clamp(EARLIEST_TODAY, LATEST_TODAY),
            source,
            counter: 0,
            used: HashSet::new(),
            taken: HashMap::new(),
            pending_twin: None,
        }
    }

    /// Draws a kind with the mix's weights.
    pub fn kind(&mut self, mix: &Mix) -> Kind {
        let total = mix.total();
        if total == 0 {
            return Kind::Birth;
        }
        let mut target = self.rng.random_range(0..total);
        for kind in Kind::ALL {
            let weight = u64::from(mix.weight(kind));
            if target < weight {
                return kind;
            }
            target -= weight;
        }
        Kind::DrivingExam
    }

    /// A new, valid, realistic event of this kind, with a fresh id.
    pub fn valid(&mut self, kind: Kind) -> v1::LifeEvent {
        let (subject, payload) = match kind {
            Kind::Birth => {
                let birth = self.birth();
                let subject = birth.child.as_ref().map(|c| c.insz.clone());
                (subject, Payload::Birth(birth))
            }
            Kind::Death => {
                let death = self.death();
                let subject = death.deceased.as_ref().map(|p| p.insz.clone());
                (subject, Payload::Death(death))
            }
            Kind::Move => {
                let change = self.change_of_address();
                let subject = change.person.as_ref().map(|p| p.insz.clone());
                (subject, Payload::ChangeOfAddress(change))
            }
            Kind::DrivingExam => {
                let exam = self.driving_exam();
                let subject = exam.candidate.as_ref().map(|p| p.insz.clone());
                (subject, Payload::DrivingExamPassed(exam))
            }
        };
        self.envelope(kind, subject.unwrap_or_default(), payload)
    }

    /// A valid event of this kind broken in one realistic way, and the reason code the gateway
    /// is expected to reject it with.
    pub fn invalid(&mut self, kind: Kind) -> (v1::LifeEvent, &'static str) {
        let applicable: Vec<Defect> = Defect::ALL
            .into_iter()
            .filter(|d| d.applies_to(kind))
            .collect();
        let at = self.below(applicable.len() as u64) as usize;
        let defect = applicable
            .get(at)
            .copied()
            .unwrap_or(Defect::InszCheckDigits);
        match self.invalid_with(kind, defect) {
            Some(event) => (event, defect.code()),
            // Not reached: `defect` applies to `kind`.
            None => {
                let mut event = self.valid(kind);
                self.apply(&mut event, Defect::InszCheckDigits);
                (event, Defect::InszCheckDigits.code())
            }
        }
    }

    /// A valid event of this kind broken with this defect; `None` when the defect does not
    /// apply to the kind (a death before birth in a move).
    pub fn invalid_with(&mut self, kind: Kind, defect: Defect) -> Option<v1::LifeEvent> {
        if !defect.applies_to(kind) {
            return None;
        }
        let mut event = self.valid(kind);
        self.apply(&mut event, defect);
        Some(event)
    }

    // --- randomness -------------------------------------------------------------------------

    /// Uniform in `0..n`; 0 when `n` is 0.
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.rng.random_range(0..n)
        }
    }

    /// Uniform in `low..=high` (`low` when the range is empty).
    fn between(&mut self, low: u32, high: u32) -> u32 {
        if high <= low {
            low
        } else {
            self.rng.random_range(low..=high)
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.rng.random::<f64>() < p
    }

    fn choose<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let at = self.below(items.len() as u64) as usize;
        items.get(at).copied()
    }

    fn choose_str(&mut self, items: &[&'static str]) -> &'static str {
        self.choose(items).unwrap_or_default()
    }

    fn date_between(&mut self, low: NaiveDate, high: NaiveDate) -> NaiveDate {
        if high <= low {
            return low;
        }
        let span = days_between(low, high);
        let offset = self.below(span + 1);
        days_after(low, offset)
    }

    /// A birth date of someone exactly `age` (completed years) on `on`.
    fn birth_date_for_age(&mut self, age: u32, on: NaiveDate) -> NaiveDate {
        let latest = years_before(on, age);
        let earliest = days_after(years_before(on, age + 1), 1);
        self.date_between(earliest, latest)
    }

    fn sex(&mut self) -> Sex {
        if self.chance(0.5) {
            Sex::Male
        } else {
            Sex::Female
        }
    }

    // --- people -----------------------------------------------------------------------------

    /// An unused INSZ for someone born on `birth_date`, or `None` when every serial of that
    /// sex on that date is taken.
    fn allocate(&mut self, birth_date: NaiveDate, sex: Sex, bis: Option<BisKind>) -> Option<Insz> {
        let offset = match bis {
            None => 0,
            Some(BisKind::SexUnknown) => 20,
            Some(BisKind::SexKnown) => 40,
        };
        let male = sex == Sex::Male;
        let key = (birth_date, offset, male);
        if self.taken.get(&key).copied().unwrap_or(0) >= SERIALS_PER_SEX {
            return None;
        }
        let first: u16 = if male { 1 } else { 2 };
        let start = self.below(u64::from(SERIALS_PER_SEX)) as u16;
        for step in 0..SERIALS_PER_SEX {
            let serial = first + 2 * ((start + step) % SERIALS_PER_SEX);
            let insz = match bis {
                None => Insz::generate(birth_date, serial),
                Some(kind) => Insz::bis(birth_date, kind, serial),
            }
            .ok()?;
            if self.used.insert(insz) {
                *self.taken.entry(key).or_insert(0) += 1;
                return Some(insz);
            }
        }
        None
    }

    /// An unused INSZ for someone born on `birth_date` or, when that date's serials are all
    /// taken (thousands of simulated births in two weeks), a day or more earlier; with the
    /// birth date it encodes.
    fn identify(
        &mut self,
        birth_date: NaiveDate,
        sex: Sex,
        bis: Option<BisKind>,
    ) -> (String, NaiveDate) {
        for shift in 0..3650 {
            let date = days_before(birth_date, shift);
            if let Some(insz) = self.allocate(date, sex, bis) {
                return (insz.to_string(), date);
            }
        }
        // Ten years of serials taken: reuse a number rather than fail.
        let serial = if sex == Sex::Male { 1 } else { 2 };
        let insz =
            Insz::generate(birth_date, serial).map_or_else(|_| String::new(), |i| i.to_string());
        (insz, birth_date)
    }

    /// Someone of another nationality with probability `p`.
    fn origin(&mut self, p: f64) -> Option<&'static Origin> {
        if self.chance(p) {
            let at = self.below(ORIGINS.len() as u64) as usize;
            ORIGINS.get(at)
        } else {
            None
        }
    }

    fn bis_origin(&mut self) -> Option<&'static Origin> {
        let at = self.choose(&BIS_ORIGINS).unwrap_or(0);
        ORIGINS.get(at)
    }

    fn family_name(&mut self, origin: Option<&'static Origin>) -> String {
        match origin {
            Some(o) => self.choose_str(o.family).to_owned(),
            None => self.choose_str(FAMILY_NAMES).to_owned(),
        }
    }

    /// One to three given names, as the person's generation and origin would have them.
    fn given_names(
        &mut self,
        sex: Sex,
        birth_date: NaiveDate,
        origin: Option<&'static Origin>,
    ) -> Vec<String> {
        let year = birth_date.year();
        let generation = if year >= 2000 {
            0
        } else if year >= 1965 {
            1
        } else {
            2
        };
        let list: &[&'static str] = match (origin, sex) {
            (Some(o), Sex::Male) => o.male,
            (Some(o), Sex::Female) => o.female,
            (None, Sex::Male) => GIVEN_MALE.get(generation).copied().unwrap_or_default(),
            (None, Sex::Female) => GIVEN_FEMALE.get(generation).copied().unwrap_or_default(),
        };
        let roll = self.below(100);
        let count = match (origin.is_some(), generation) {
            (true, _) => 1,
            (false, 2) if roll < 30 => 1,
            (false, 2) if roll < 80 => 2,
            (false, 2) => 3,
            (false, 1) if roll < 55 => 1,
            (false, _) if roll < 60 => 1,
            (false, _) => 2,
        };
        let mut names: Vec<String> = Vec::with_capacity(count);
        // Older generations very often carry Maria or Jozef as a second name.
        for i in 0..count {
            let name = if i > 0 && generation == 2 && self.chance(0.4) {
                match sex {
                    Sex::Female => "Maria",
                    Sex::Male => "Jozef",
                }
            } else {
                self.choose_str(list)
            };
            if !names.iter().any(|n| n == name) {
                names.push(name.to_owned());
            }
        }
        names
    }

    /// A person born on (or, if that date is full, shortly before) `birth_date`, with the
    /// birth date actually used.
    fn person(
        &mut self,
        birth_date: NaiveDate,
        sex: Sex,
        family_name: Option<String>,
        origin: Option<&'static Origin>,
        bis: Option<BisKind>,
    ) -> (v1::Person, NaiveDate) {
        let (insz, birth_date) = self.identify(birth_date, sex, bis);
        let family_name = family_name.unwrap_or_else(|| self.family_name(origin));
        let given_names = self.given_names(sex, birth_date, origin);
        let nationalities = match origin {
            None => vec!["BE".to_owned()],
            Some(o) if bis.is_some() || self.chance(0.5) => vec![o.country.to_owned()],
            Some(o) => vec!["BE".to_owned(), o.country.to_owned()],
        };
        let gender = match sex {
            Sex::Male => v1::Gender::Male,
            Sex::Female => v1::Gender::Female,
        };
        let person = v1::Person {
            insz,
            given_names,
            family_name,
            date_of_birth: birth_date.to_string(),
            gender: gender as i32,
            nationalities,
        };
        (person, birth_date)
    }

    /// An adult of `age` on `on`, mostly Belgian, a share from abroad, some with a bis number.
    fn adult(&mut self, age: u32, on: NaiveDate, bis_share: f64) -> (v1::Person, NaiveDate) {
        let sex = self.sex();
        let birth_date = self.birth_date_for_age(age, on);
        if self.chance(bis_share) {
            let origin = self.bis_origin();
            self.person(birth_date, sex, None, origin, Some(BisKind::SexKnown))
        } else {
            let origin = self.origin(0.08);
            self.person(birth_date, sex, None, origin, None)
        }
    }

    // --- places -----------------------------------------------------------------------------

    /// Where someone lives: population-weighted, mostly Flanders.
    fn residence(&mut self) -> &'static Municipality {
        let u = self.rng.random::<f64>();
        if self.chance(0.8) {
            municipality::pick_in(Region::Flanders, u)
        } else {
            municipality::pick(u)
        }
    }

    /// A population-weighted municipality in the same province as `near` (the same region for
    /// Brussels, which has no province); `near` itself if none turns up.
    fn nearby(&mut self, near: &'static Municipality) -> &'static Municipality {
        for _ in 0..40 {
            let u = self.rng.random::<f64>();
            let other = municipality::pick_in(near.region, u);
            if other.province == near.province {
                return other;
            }
        }
        near
    }

    /// A municipality other than `from`: mostly nearby, sometimes anywhere.
    fn elsewhere(&mut self, from: &'static Municipality) -> &'static Municipality {
        for _ in 0..40 {
            let other = if self.chance(0.65) {
                self.nearby(from)
            } else {
                self.residence()
            };
            if other.nis_code != from.nis_code {
                return other;
            }
        }
        // Antwerpen is large enough that the draws above practically never end here.
        municipality::pick_in(Region::Flanders, 0.0)
    }

    fn address(&mut self, m: &'static Municipality) -> v1::Address {
        let street = self.choose_str(streets_of(m.region));
        let number = if self.chance(0.7) {
            self.between(1, 60)
        } else {
            self.between(61, 240)
        };
        let suffix = if self.chance(0.04) {
            self.choose_str(&["A", "B", "C"])
        } else {
            ""
        };
        let box_number = if self.chance(0.15) {
            self.between(1, 12).to_string()
        } else {
            String::new()
        };
        v1::Address {
            thoroughfare: street.to_owned(),
            house_number: format!("{number}{suffix}"),
            box_number,
            post_code: post_code(m.nis_code.get()),
            municipality_name: place_name(m).to_owned(),
            municipality_nis_code: m.nis_code.to_string(),
            country_code: "BE".to_owned(),
            ..Default::default()
        }
    }

    fn act(&mut self, m: &'static Municipality, registered: NaiveDate) -> v1::CivilStatusAct {
        let number = self.between(1, 999_999);
        v1::CivilStatusAct {
            act_reference: format!("DABS-{}-{}-{number:06}", m.nis_code, registered.year()),
            registering_municipality_nis_code: m.nis_code.to_string(),
            registration_date: registered.to_string(),
        }
    }

    /// A RIZIV/INAMI number of a general practitioner, `1-NNNNN-CC-QQQ`: the shape is right,
    /// the control digits follow the usual mod-97 rule, the doctor does not exist.
    fn doctor(&mut self) -> String {
        let number = self.between(10_000, 99_999);
        let control = 97 - (100_000 + number) % 97;
        let qualification = self.choose_str(&["003", "004"]);
        format!("1-{number:05}-{control:02}-{qualification}")
    }

    // --- the four payloads ------------------------------------------------------------------

    fn birth(&mut self) -> v1::Birth {
        if let Some(twin) = self.pending_twin.take() {
            return self.second_twin(twin);
        }
        let today = self.today;
        let born = days_before(today, self.below(14));
        let home = self.residence();

        let mother_origin = self.origin(0.12);
        let mother_age = 20 + self.between(0, 12) + self.between(0, 12);
        let mother_birth = self.birth_date_for_age(mother_age, born);
        let (mother, _) = self.person(mother_birth, Sex::Female, None, mother_origin, None);

        let other_parent = if self.chance(0.92) {
            let sex = if self.chance(0.97) {
                Sex::Male
            } else {
                Sex::Female
            };
            let age = (mother_age + self.between(0, 9))
                .saturating_sub(3)
                .clamp(20, 45);
            let origin = if mother_origin.is_some() && self.chance(0.7) {
                mother_origin
            } else {
                self.origin(0.06)
            };
            let birth_date = self.birth_date_for_age(age, born);
            Some(self.person(birth_date, sex, None, origin, None).0)
        } else {
            None
        };

        // Since 2014 the parents choose: the father's name, the mother's, or both.
        let family_name = match &other_parent {
            Some(other) if other.gender == v1::Gender::Male as i32 => {
                let roll = self.below(100);
                if roll < 78 {
                    other.family_name.clone()
                } else if roll < 90 {
                    mother.family_name.clone()
                } else {
                    format!("{} {}", other.family_name, mother.family_name)
                }
            }
            Some(other) if self.chance(0.5) => other.family_name.clone(),
            _ => mother.family_name.clone(),
        };
        let sex = self.sex();
        let name_origin = if self.chance(0.5) {
            mother_origin
        } else {
            None
        };
        let (mut child, born) = self.person(born, sex, Some(family_name), name_origin, None);
        let belgian_parent = mother.nationalities.iter().any(|n| n == "BE")
            || other_parent
                .as_ref()
                .is_some_and(|p| p.nationalities.iter().any(|n| n == "BE"));
        child.nationalities = if belgian_parent {
            vec!["BE".to_owned()]
        } else {
            mother.nationalities.clone()
        };

        // Most children are born in a hospital near home.
        let place = if self.chance(0.55) {
            home
        } else {
            self.nearby(home)
        };
        let latest = days_after(born, 15).min(today);
        let registered = self.date_between(born, latest);
        let act = self.act(place, registered);
        let hour = self.below(24);
        let minute = self.below(60);
        let registered_address = self.address(home);
        let birth = v1::Birth {
            act: Some(act),
            child: Some(child),
            place_of_birth_nis_code: place.nis_code.to_string(),
            time_of_birth: format!("{hour:02}:{minute:02}"),
            mother: Some(mother),
            other_parent,
            registered_address: Some(registered_address),
            multiple_birth_index: 1,
        };
        // About 1.7% of births are twins: the second child is the next birth published.
        if self.chance(0.017) {
            self.pending_twin = Some(birth.clone());
        }
        birth
    }

    fn second_twin(&mut self, mut birth: v1::Birth) -> v1::Birth {
        let first = birth.child.take().unwrap_or_default();
        let born =
            NaiveDate::parse_from_str(&first.date_of_birth, "%Y-%m-%d").unwrap_or(self.today);
        let sex = self.sex();
        let (mut child, _) = self.person(born, sex, Some(first.family_name.clone()), None, None);
        // Twins do not share a first name.
        for _ in 0..5 {
            if child.given_names.first() != first.given_names.first() {
                break;
            }
            child.given_names = self.given_names(sex, born, None);
        }
        child.nationalities = first.nationalities.clone();
        child.date_of_birth = first.date_of_birth.clone();
        if let Ok(time) = NaiveTime::parse_from_str(&birth.time_of_birth, "%H:%M") {
            let later = time
                .overflowing_add_signed(chrono::TimeDelta::minutes(i64::from(self.between(2, 40))));
            // Keep the second child on the same day.
            let later = if later.1 == 0 { later.0 } else { time };
            birth.time_of_birth = later.format("%H:%M").to_string();
        }
        if let Some(act) = birth.act.as_mut() {
            act.act_reference = format!(
                "DABS-{}-{}-{:06}",
                act.registering_municipality_nis_code,
                act.registration_date.get(..4).unwrap_or("0000"),
                self.between(1, 999_999)
            );
        }
        // The INSZ may encode an earlier date if the birth date's serials were all taken; keep
        // the person consistent with its number then.
        if let Ok(insz) = Insz::parse(&child.insz)
            && let Some(date) = insz.birth_date()
        {
            child.date_of_birth = date.to_string();
        }
        birth.child = Some(child);
        birth.multiple_birth_index = 2;
        birth
    }

    fn death(&mut self) -> v1::Death {
        let today = self.today;
        let died = days_before(today, self.below(4));
        let roll = self.below(100);
        let age = if roll < 8 {
            self.between(40, 59)
        } else if roll < 25 {
            self.between(60, 74)
        } else {
            75 + self.between(0, 12) + self.between(0, 13)
        };
        let (deceased, _) = self.adult(age, died, 0.02);
        let home = self.residence();
        let place = if self.chance(0.45) {
            home
        } else {
            self.nearby(home)
        };
        let registered = self.date_between(died, today);
        let act = self.act(place, registered);
        let doctor = self.doctor();
        let registered_address = self.address(home);
        v1::Death {
            act: Some(act),
            deceased: Some(deceased),
            date_of_death: died.to_string(),
            place_of_death_nis_code: place.nis_code.to_string(),
            declaring_doctor_riziv: doctor,
            registered_address: Some(registered_address),
        }
    }

    fn mover_age(&mut self) -> u32 {
        let roll = self.below(100);
        if roll < 5 {
            self.between(18, 19)
        } else if roll < 65 {
            self.between(20, 39)
        } else if roll < 90 {
            self.between(40, 64)
        } else {
            self.between(65, 85)
        }
    }

    fn change_of_address(&mut self) -> v1::ChangeOfAddress {
        let today = self.today;
        let window = working_days_back(today, 8);
        let moved = self.date_between(window, today);
        let declared = self.date_between(moved, today);
        if self.chance(0.02)
            && let Some(readdressing) = self.merger_readdressing(moved, declared)
        {
            return readdressing;
        }
        let age = self.mover_age();
        let (person, _) = self.adult(age, moved, 0.0);

        let from = self.residence();
        // About a third of moves stay within the municipality.
        let to = if self.chance(0.3) {
            from
        } else {
            self.elsewhere(from)
        };
        let previous = self.address(from);
        let mut new = self.address(to);
        for _ in 0..10 {
            if new.thoroughfare != previous.thoroughfare
                || new.house_number != previous.house_number
            {
                break;
            }
            new = self.address(to);
        }
        if new.thoroughfare == previous.thoroughfare && new.house_number == previous.house_number {
            new.house_number = format!("{}A", new.house_number);
        }

        let mut household = Vec::new();
        if self.chance(0.35) {
            if self.chance(0.8) {
                let partner_age = (age + self.between(0, 10)).saturating_sub(5).max(18);
                let (partner, _) = self.adult(partner_age, moved, 0.0);
                household.push(partner.insz);
            }
            if (25..=55).contains(&age) {
                for _ in 0..self.below(3) {
                    let child_age = self.between(0, (age - 20).min(17));
                    let birth_date = self.birth_date_for_age(child_age, moved);
                    let sex = self.sex();
                    let (insz, _) = self.identify(birth_date, sex, None);
                    household.push(insz);
                }
            }
        }
        v1::ChangeOfAddress {
            person: Some(person),
            previous_address: Some(previous),
            new_address: Some(new),
            declaration_date: declared.to_string(),
            move_date: moved.to_string(),
            declaring_municipality_nis_code: to.nis_code.to_string(),
            household_member_insz: household,
            reason: v1::ChangeOfAddressReason::Move as i32,
        }
    }

    /// An administrative re-addressing after a 2025 merger: same street and number, the
    /// municipality's name now the merged one (sometimes the street renamed to avoid a double
    /// name in the merged municipality). Both addresses carry the current NIS code, as the
    /// registers converted the codes on 2025-01-01.
    fn merger_readdressing(
        &mut self,
        moved: NaiveDate,
        declared: NaiveDate,
    ) -> Option<v1::ChangeOfAddress> {
        let candidates: Vec<_> = municipality::mergers()
            .iter()
            .filter(|m| strip_qualifier(m.old_name_nl) != strip_qualifier(m.new_name_nl))
            .collect();
        let merger = self.choose(&candidates)?;
        let target = municipality::lookup_code(merger.new_code).ok()?;
        let age = self.mover_age();
        let (person, _) = self.adult(age, moved, 0.0);
        let mut previous = self.address(target);
        previous.municipality_name = strip_qualifier(merger.old_name_nl).to_owned();
        previous.post_code = post_code(merger.old_code.get());
        let mut new = previous.clone();
        new.municipality_name = place_name(target).to_owned();
        if self.chance(0.3) {
            let renamed = self.choose_str(streets_of(target.region));
            new.thoroughfare = if renamed == previous.thoroughfare {
                format!("Oude {renamed}")
            } else {
                renamed.to_owned()
            };
        }
        Some(v1::ChangeOfAddress {
            person: Some(person),
            previous_address: Some(previous),
            new_address: Some(new),
            declaration_date: declared.to_string(),
            move_date: moved.to_string(),
            declaring_municipality_nis_code: target.nis_code.to_string(),
            household_member_insz: Vec::new(),
            reason: v1::ChangeOfAddressReason::MunicipalityMerger as i32,
        })
    }

    fn driving_exam(&mut self) -> v1::DrivingExamPassed {
        let today = self.today;
        // Exam centres work on weekdays; 7 days back always hold five of them.
        let mut days: Vec<NaiveDate> = (0..7)
            .map(|d| days_before(today, d))
            .filter(|d| is_working_day(*d))
            .collect();
        if days.is_empty() {
            days.push(today);
        }
        let exam_date = self.choose(&days).unwrap_or(today);

        let roll = self.below(100);
        let (category, min_age) = if roll < 80 {
            (v1::LicenceCategory::B, 17)
        } else if roll < 86 {
            // AM is allowed from 16, but the gateway's rule is 17 for every category.
            (v1::LicenceCategory::Am, 17)
        } else if roll < 93 {
            (v1::LicenceCategory::A, 24)
        } else {
            (v1::LicenceCategory::C, 21)
        };
        let roll = self.below(100);
        let age = if roll < 60 {
            self.between(17, 19)
        } else if roll < 90 {
            self.between(20, 24)
        } else {
            self.between(25, 30)
        };
        let age = age.max(min_age).min(30);
        let (candidate, _) = self.adult(age, exam_date, 0.02);

        let residence = if self.chance(0.93) {
            let u = self.rng.random::<f64>();
            municipality::pick_in(Region::Flanders, u)
        } else {
            let u = self.rng.random::<f64>();
            municipality::pick_in(Region::Brussels, u)
        };
        let centre = self.exam_centre(residence);
        let number = self.between(1, 9999);
        let reference = format!(
            "{}-{}-{number:04}",
            centre.code.trim_start_matches("GOCA-"),
            exam_date.format("%Y%m%d")
        );
        v1::DrivingExamPassed {
            candidate: Some(candidate),
            exam_centre: Some(v1::ExamCentre {
                code: centre.code.to_owned(),
                name: centre.name.to_owned(),
                municipality_nis_code: centre.nis.to_owned(),
            }),
            exam_date: exam_date.to_string(),
            licence_category: category as i32,
            exam_type: v1::ExamType::Practical as i32,
            exam_reference: reference,
            residence_municipality_nis_code: residence.nis_code.to_string(),
        }
    }

    /// A centre in the candidate's province (Flemish Brabant for Brussels), else any.
    fn exam_centre(&mut self, residence: &'static Municipality) -> &'static Centre {
        let province = match residence.region {
            Region::Brussels => municipality::lookup("24062").ok().and_then(|m| m.province),
            _ => residence.province,
        };
        let near: Vec<&'static Centre> = EXAM_CENTRES
            .iter()
            .filter(|c| {
                municipality::lookup(c.nis)
                    .ok()
                    .is_some_and(|m| m.province == province)
            })
            .collect();
        let all: Vec<&'static Centre> = EXAM_CENTRES.iter().collect();
        let pool = if near.is_empty() { &all } else { &near };
        let fallback = &EXAM_CENTRES[0];
        self.choose(pool).unwrap_or(fallback)
    }

    // --- the envelope -----------------------------------------------------------------------

    fn envelope(&mut self, kind: Kind, subject: String, payload: Payload) -> v1::LifeEvent {
        self.counter += 1;
        // Registered during office hours (07:00–18:00 UTC) on `today`.
        let midnight = self.today.and_time(NaiveTime::MIN).and_utc().timestamp();
        let seconds = midnight + i64::try_from(self.below(11 * 3600)).unwrap_or(0) + 7 * 3600;
        v1::LifeEvent {
            id: format!("{kind}-{}-{}", self.seed, self.counter),
            source: self.source.clone(),
            r#type: kind.event_type().to_owned(),
            specversion: "1.0".to_owned(),
            time: Some(Timestamp { seconds, nanos: 0 }),
            subject,
            datacontenttype: "application/protobuf".to_owned(),
            dataschema: String::new(),
            payload: Some(payload),
        }
    }

    // --- defects ----------------------------------------------------------------------------

    fn apply(&mut self, event: &mut v1::LifeEvent, defect: Defect) {
        match defect {
            Defect::InszCheckDigits => {
                let Some(person) = subject_person(event) else {
                    return;
                };
                let broken = self.mistype_insz(&person.insz);
                person.insz.clone_from(&broken);
                event.subject = broken;
            }
            Defect::InszBirthDateMismatch => {
                let kind_is_birth = matches!(event.payload, Some(Payload::Birth(_)));
                let Some(person) = subject_person(event) else {
                    return;
                };
                let Ok(born) = NaiveDate::parse_from_str(&person.date_of_birth, "%Y-%m-%d") else {
                    return;
                };
                // An earlier date keeps every other rule (not in the future, born before the
                // death, old enough for the exam) satisfied.
                let roll = self.below(100);
                let wrong = if kind_is_birth || roll < 60 {
                    days_before(born, u64::from(self.between(1, 9)))
                } else if roll < 85 {
                    years_before(born, 1)
                } else {
                    years_before(born, 10)
                };
                person.date_of_birth = wrong.to_string();
            }
            Defect::DateInFuture => self.date_in_future(event),
            Defect::DeathBeforeBirth => {
                if let Some(Payload::Death(death)) = event.payload.as_mut()
                    && let Some(person) = &death.deceased
                    && let Ok(born) = NaiveDate::parse_from_str(&person.date_of_birth, "%Y-%m-%d")
                {
                    let days = self.between(1, 3650);
                    death.date_of_death = days_before(born, u64::from(days)).to_string();
                }
            }
            Defect::ExamBeforeMinimumAge => {
                if let Some(Payload::DrivingExamPassed(exam)) = event.payload.as_mut()
                    && let Ok(exam_date) = NaiveDate::parse_from_str(&exam.exam_date, "%Y-%m-%d")
                {
                    // 15 or 16, at least a month short of 17 however 29 February is counted.
                    let earliest = days_after(years_before(exam_date, 17), 30);
                    let latest = years_before(exam_date, 15);
                    let born = self.date_between(earliest, latest);
                    let sex = self.sex();
                    let (candidate, _) = self.person(born, sex, None, None, None);
                    event.subject.clone_from(&candidate.insz);
                    exam.candidate = Some(candidate);
                    exam.licence_category = v1::LicenceCategory::B as i32;
                }
            }
            Defect::MunicipalityMerged => self.merged_code(event),
            Defect::MunicipalityUnknown => self.unknown_code(event),
            Defect::MissingField => {
                let drop_person = self.chance(0.5);
                match event.payload.as_mut() {
                    Some(Payload::Birth(b)) => b.child = None,
                    Some(Payload::Death(d)) if drop_person => d.deceased = None,
                    Some(Payload::Death(d)) => d.date_of_death.clear(),
                    Some(Payload::ChangeOfAddress(m)) if drop_person => m.person = None,
                    Some(Payload::ChangeOfAddress(m)) => m.new_address = None,
                    Some(Payload::DrivingExamPassed(e)) if drop_person => e.candidate = None,
                    Some(Payload::DrivingExamPassed(e)) => e.exam_date.clear(),
                    None => {}
                }
            }
        }
    }

    /// A typo in the serial or check digits that the check digits catch (any single-digit
    /// change there is caught; a swap of the two check digits mostly is).
    fn mistype_insz(&mut self, insz: &str) -> String {
        let digits: Vec<u8> = insz.bytes().collect();
        for _ in 0..20 {
            let mut typo = digits.clone();
            if self.chance(0.15) {
                typo.swap(9, 10);
            } else {
                let at = self.between(6, 10) as usize;
                if let Some(d) = typo.get_mut(at) {
                    let shift = self.between(1, 9) as u8;
                    *d = b'0' + (d.wrapping_sub(b'0') + shift) % 10;
                }
            }
            let typo = String::from_utf8_lossy(&typo).into_owned();
            if matches!(Insz::parse(&typo), Err(InszError::CheckDigits { .. })) {
                return typo;
            }
        }
        // Not reached for an 11-digit INSZ; make the check digits wrong outright.
        let first_nine = insz.get(..9).unwrap_or("850730033");
        (0..100)
            .map(|cc| format!("{first_nine}{cc:02}"))
            .find(|s| matches!(Insz::parse(s), Err(InszError::CheckDigits { .. })))
            .unwrap_or_else(|| "85073003329".to_owned())
    }

    fn date_in_future(&mut self, event: &mut v1::LifeEvent) {
        let today = self.today;
        let ahead = days_after(today, u64::from(self.between(30, 365)));
        match event.payload.as_mut() {
            // A year typo in the birth date, and the INSZ computed from it.
            Some(Payload::Birth(birth)) => {
                let Some(child) = birth.child.as_mut() else {
                    return;
                };
                let sex = if child.gender == v1::Gender::Male as i32 {
                    Sex::Male
                } else {
                    Sex::Female
                };
                let (insz, born) = self.identify(ahead, sex, None);
                child.insz.clone_from(&insz);
                child.date_of_birth = born.to_string();
                event.subject = insz;
            }
            Some(Payload::Death(death)) => death.date_of_death = ahead.to_string(),
            // A move declared in advance.
            Some(Payload::ChangeOfAddress(change)) => {
                change.move_date = days_after(today, u64::from(self.between(30, 120))).to_string();
            }
            Some(Payload::DrivingExamPassed(exam)) => exam.exam_date = ahead.to_string(),
            None => {}
        }
    }

    /// The registry still uses a code retired on 2025-01-01 for the municipality it names.
    fn merged_code(&mut self, event: &mut v1::LifeEvent) {
        let retired: Vec<_> = municipality::mergers()
            .iter()
            .filter(|m| m.old_code != m.new_code)
            .collect();
        let Some(merger) = self.choose(&retired) else {
            return;
        };
        let code = merger.old_code.to_string();
        let stale_act = |act: &mut v1::CivilStatusAct| {
            let number = act.act_reference.rsplit('-').next().unwrap_or("000001");
            let year = act.registration_date.get(..4).unwrap_or("0000");
            act.act_reference = format!("DABS-{code}-{year}-{number}");
            act.registering_municipality_nis_code.clone_from(&code);
        };
        match event.payload.as_mut() {
            Some(Payload::Birth(birth)) => {
                birth.place_of_birth_nis_code.clone_from(&code);
                if let Some(act) = birth.act.as_mut() {
                    stale_act(act);
                }
            }
            Some(Payload::Death(death)) => {
                death.place_of_death_nis_code.clone_from(&code);
                if let Some(act) = death.act.as_mut() {
                    stale_act(act);
                }
            }
            Some(Payload::ChangeOfAddress(change)) => {
                change.declaring_municipality_nis_code.clone_from(&code);
                if let Some(new) = change.new_address.as_mut() {
                    new.municipality_nis_code.clone_from(&code);
                    new.municipality_name = strip_qualifier(merger.old_name_nl).to_owned();
                    new.post_code = post_code(merger.old_code.get());
                }
            }
            Some(Payload::DrivingExamPassed(exam)) => exam.residence_municipality_nis_code = code,
            None => {}
        }
    }

    /// A typo in one NIS code that makes it no municipality at all.
    fn unknown_code(&mut self, event: &mut v1::LifeEvent) {
        let field = match event.payload.as_mut() {
            Some(Payload::Birth(birth)) => &mut birth.place_of_birth_nis_code,
            Some(Payload::Death(death)) => &mut death.place_of_death_nis_code,
            Some(Payload::ChangeOfAddress(change)) => match change.new_address.as_mut() {
                Some(new) => &mut new.municipality_nis_code,
                None => return,
            },
            Some(Payload::DrivingExamPassed(exam)) => &mut exam.residence_municipality_nis_code,
            None => return,
        };
        let digits: Vec<u8> = field.bytes().collect();
        for _ in 0..50 {
            let mut typo = digits.clone();
            let at = self.between(0, 4) as usize;
            if let Some(d) = typo.get_mut(at) {
                let shift = self.between(1, 9) as u8;
                *d = b'0' + (d.wrapping_sub(b'0') + shift) % 10;
            }
            let typo = String::from_utf8_lossy(&typo).into_owned();
            if matches!(
                municipality::lookup(&typo),
                Err(MunicipalityError::Unknown { .. })
            ) {
                *field = typo;
                return;
            }
        }
        *field = "99999".to_owned();
    }
}

/// The person an event is about (its `subject`).
fn subject_person(event: &mut v1::LifeEvent) -> Option<&mut v1::Person> {
    match event.payload.as_mut()? {
        Payload::Birth(b) => b.child.as_mut(),
        Payload::Death(d) => d.deceased.as_mut(),
        Payload::ChangeOfAddress(m) => m.person.as_mut(),
        Payload::DrivingExamPassed(e) => e.candidate.as_mut(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn today() -> NaiveDate {
        date("2026-03-18") // a Wednesday
    }

    fn generator(seed: u64) -> Generator {
        Generator::new(seed, today(), "urn:be:levensloop:simulator".to_owned())
    }

    /// Completed years from `born` to `on`.
    fn age_on(born: NaiveDate, on: NaiveDate) -> i32 {
        let mut age = on.year() - born.year();
        if (on.month(), on.day()) < (born.month(), born.day()) {
            age -= 1;
        }
        age
    }

    fn persons(event: &v1::LifeEvent) -> Vec<&v1::Person> {
        match event.payload.as_ref() {
            Some(Payload::Birth(b)) => [&b.child, &b.mother, &b.other_parent]
                .into_iter()
                .flatten()
                .collect(),
            Some(Payload::Death(d)) => d.deceased.iter().collect(),
            Some(Payload::ChangeOfAddress(m)) => m.person.iter().collect(),
            Some(Payload::DrivingExamPassed(e)) => e.candidate.iter().collect(),
            None => Vec::new(),
        }
    }

    fn subject(event: &v1::LifeEvent) -> Option<&v1::Person> {
        match event.payload.as_ref()? {
            Payload::Birth(b) => b.child.as_ref(),
            Payload::Death(d) => d.deceased.as_ref(),
            Payload::ChangeOfAddress(m) => m.person.as_ref(),
            Payload::DrivingExamPassed(e) => e.candidate.as_ref(),
        }
    }

    fn nis_codes(event: &v1::LifeEvent) -> Vec<&str> {
        let mut codes = Vec::new();
        match event.payload.as_ref() {
            Some(Payload::Birth(b)) => {
                codes.push(b.place_of_birth_nis_code.as_str());
                codes.extend(
                    b.act
                        .iter()
                        .map(|a| a.registering_municipality_nis_code.as_str()),
                );
                codes.extend(
                    b.registered_address
                        .iter()
                        .map(|a| a.municipality_nis_code.as_str()),
                );
            }
            Some(Payload::Death(d)) => {
                codes.push(d.place_of_death_nis_code.as_str());
                codes.extend(
                    d.act
                        .iter()
                        .map(|a| a.registering_municipality_nis_code.as_str()),
                );
                codes.extend(
                    d.registered_address
                        .iter()
                        .map(|a| a.municipality_nis_code.as_str()),
                );
            }
            Some(Payload::ChangeOfAddress(m)) => {
                codes.push(m.declaring_municipality_nis_code.as_str());
                for a in [&m.previous_address, &m.new_address].into_iter().flatten() {
                    codes.push(a.municipality_nis_code.as_str());
                }
            }
            Some(Payload::DrivingExamPassed(e)) => {
                codes.push(e.residence_municipality_nis_code.as_str());
                codes.extend(
                    e.exam_centre
                        .iter()
                        .map(|c| c.municipality_nis_code.as_str()),
                );
            }
            None => {}
        }
        codes
    }

    /// The dates an event carries, non-empty ones only.
    fn dates(event: &v1::LifeEvent) -> Vec<NaiveDate> {
        let mut raw: Vec<&str> = persons(event)
            .iter()
            .map(|p| p.date_of_birth.as_str())
            .collect();
        match event.payload.as_ref() {
            Some(Payload::Birth(b)) => {
                raw.extend(b.act.iter().map(|a| a.registration_date.as_str()))
            }
            Some(Payload::Death(d)) => {
                raw.push(&d.date_of_death);
                raw.extend(d.act.iter().map(|a| a.registration_date.as_str()));
            }
            Some(Payload::ChangeOfAddress(m)) => {
                raw.push(&m.move_date);
                raw.push(&m.declaration_date);
            }
            Some(Payload::DrivingExamPassed(e)) => raw.push(&e.exam_date),
            None => {}
        }
        raw.into_iter()
            .filter(|s| !s.is_empty())
            .map(date)
            .collect()
    }

    /// A small model of the gateway's rules: the reason codes this event would be refused
    /// with (empty for a valid event).
    fn defects(event: &v1::LifeEvent, today: NaiveDate) -> BTreeSet<&'static str> {
        let mut found = BTreeSet::new();
        let kind = match event.payload.as_ref() {
            Some(Payload::Birth(_)) => Kind::Birth,
            Some(Payload::Death(_)) => Kind::Death,
            Some(Payload::ChangeOfAddress(_)) => Kind::Move,
            Some(Payload::DrivingExamPassed(_)) => Kind::DrivingExam,
            None => {
                found.insert("MISSING_FIELD");
                return found;
            }
        };
        // The envelope.
        if event.id.is_empty()
            || event.source.is_empty()
            || event.specversion != "1.0"
            || event.r#type != kind.event_type()
            || event.datacontenttype != "application/protobuf"
            || event.time.is_none()
        {
            found.insert("ENVELOPE");
        }
        // Required fields.
        let missing = match event.payload.as_ref() {
            Some(Payload::Birth(b)) => b.child.is_none(),
            Some(Payload::Death(d)) => d.deceased.is_none() || d.date_of_death.is_empty(),
            Some(Payload::ChangeOfAddress(m)) => {
                m.person.is_none()
                    || m.new_address.is_none()
                    || m.move_date.is_empty()
                    || m.declaration_date.is_empty()
            }
            Some(Payload::DrivingExamPassed(e)) => e.candidate.is_none() || e.exam_date.is_empty(),
            None => true,
        };
        if missing {
            found.insert("MISSING_FIELD");
        }
        if let Some(s) = subject(event)
            && s.insz != event.subject
        {
            found.insert("SUBJECT");
        }
        // INSZ numbers.
        for person in persons(event) {
            match Insz::parse(&person.insz) {
                Err(InszError::CheckDigits { .. }) => {
                    found.insert("INSZ_CHECK_DIGITS");
                }
                Err(_) => {
                    found.insert("INSZ_OTHER");
                }
                Ok(insz) => {
                    if insz.birth_date().map(|d| d.to_string())
                        != Some(person.date_of_birth.clone())
                    {
                        found.insert("INSZ_BIRTH_DATE_MISMATCH");
                    }
                }
            }
        }
        if let Payload::ChangeOfAddress(m) = event.payload.as_ref().unwrap() {
            for insz in &m.household_member_insz {
                if Insz::parse(insz).is_err() {
                    found.insert("INSZ_OTHER");
                }
            }
        }
        // Dates.
        if dates(event).iter().any(|d| *d > today) {
            found.insert("DATE_IN_FUTURE");
        }
        match event.payload.as_ref().unwrap() {
            Payload::Death(d) => {
                if let Some(p) = &d.deceased
                    && !d.date_of_death.is_empty()
                    && date(&d.date_of_death) < date(&p.date_of_birth)
                {
                    found.insert("DEATH_BEFORE_BIRTH");
                }
            }
            Payload::DrivingExamPassed(e) => {
                if let Some(p) = &e.candidate
                    && !e.exam_date.is_empty()
                {
                    let exam = date(&e.exam_date);
                    let born = date(&p.date_of_birth);
                    let seventeen = born.checked_add_months(Months::new(17 * 12)).unwrap();
                    if exam < seventeen || age_on(born, exam) < 17 {
                        found.insert("EXAM_BEFORE_MINIMUM_AGE");
                    }
                }
            }
            _ => {}
        }
        // Municipalities.
        for code in nis_codes(event) {
            match municipality::lookup(code) {
                Ok(_) => {}
                Err(MunicipalityError::MergedAway { .. }) => {
                    found.insert("MUNICIPALITY_MERGED");
                }
                Err(MunicipalityError::Unknown { .. }) => {
                    found.insert("MUNICIPALITY_UNKNOWN");
                }
                Err(MunicipalityError::Malformed { .. }) => {
                    found.insert("NIS_MALFORMED");
                }
            }
        }
        found
    }

    #[test]
    fn same_seed_same_events() {
        let run = |seed| {
            let mut g = generator(seed);
            let mix = Mix::default();
            (0..300)
                .map(|i| {
                    let kind = g.kind(&mix);
                    if i % 7 == 0 {
                        g.invalid(kind).0
                    } else {
                        g.valid(kind)
                    }
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn valid_events_pass_every_rule() {
        for seed in 0..3 {
            let mut g = generator(seed);
            for kind in Kind::ALL {
                for _ in 0..400 {
                    let event = g.valid(kind);
                    let found = defects(&event, today());
                    assert!(found.is_empty(), "{found:?} in {event:#?}");
                }
            }
        }
    }

    #[test]
    fn valid_events_are_realistic() {
        let t = today();
        let mut g = generator(7);
        let mut bis = 0;
        let mut persons_seen = 0;
        let mut readdressings = 0;
        let mut non_flemish = 0;
        let mut residences = 0;
        let mut categories = BTreeSet::new();
        let mut twins = 0;
        for kind in Kind::ALL {
            for _ in 0..1500 {
                let event = g.valid(kind);
                assert_eq!(event.id, format!("{kind}-7-{}", g.counter));
                assert_eq!(event.source, "urn:be:levensloop:simulator");
                let time = event.time.unwrap();
                let at = chrono::DateTime::from_timestamp(time.seconds, 0).unwrap();
                assert_eq!(at.date_naive(), t);
                for p in persons(&event) {
                    persons_seen += 1;
                    let insz = Insz::parse(&p.insz).unwrap();
                    bis += usize::from(insz.is_bis());
                    let sex = if p.gender == v1::Gender::Male as i32 {
                        Sex::Male
                    } else {
                        assert_eq!(p.gender, v1::Gender::Female as i32);
                        Sex::Female
                    };
                    assert_eq!(insz.sex(), Some(sex), "{}", p.insz);
                    assert!(!p.given_names.is_empty() && !p.family_name.is_empty());
                    assert!(!p.nationalities.is_empty());
                }
                match event.payload.as_ref().unwrap() {
                    Payload::Birth(b) => {
                        let child = b.child.as_ref().unwrap();
                        let born = date(&child.date_of_birth);
                        assert!(born <= t && born >= days_before(t, 13), "{born}");
                        let registered = date(&b.act.as_ref().unwrap().registration_date);
                        assert!(registered >= born && registered <= days_after(born, 15));
                        for parent in [&b.mother, &b.other_parent].into_iter().flatten() {
                            let age = age_on(date(&parent.date_of_birth), born);
                            assert!((20..=45).contains(&age), "parent aged {age}");
                        }
                        assert_eq!(b.mother.as_ref().unwrap().gender, v1::Gender::Female as i32);
                        twins += usize::from(b.multiple_birth_index == 2);
                        assert_eq!(b.time_of_birth.len(), 5);
                    }
                    Payload::Death(d) => {
                        let died = date(&d.date_of_death);
                        assert!(died <= t && died >= days_before(t, 3));
                        let age = age_on(date(&d.deceased.as_ref().unwrap().date_of_birth), died);
                        assert!((40..=100).contains(&age), "died aged {age}");
                        assert!(d.declaring_doctor_riziv.starts_with("1-"));
                    }
                    Payload::ChangeOfAddress(m) => {
                        let moved = date(&m.move_date);
                        let declared = date(&m.declaration_date);
                        assert!(moved >= working_days_back(t, 8) && declared >= moved);
                        assert!(declared <= t);
                        let age = age_on(date(&m.person.as_ref().unwrap().date_of_birth), moved);
                        assert!(age >= 18);
                        let (from, to) = (
                            m.previous_address.as_ref().unwrap(),
                            m.new_address.as_ref().unwrap(),
                        );
                        assert_ne!(from, to);
                        assert_eq!(m.declaring_municipality_nis_code, to.municipality_nis_code);
                        let reason = v1::ChangeOfAddressReason::try_from(m.reason).unwrap();
                        match reason {
                            v1::ChangeOfAddressReason::Move => {
                                assert_ne!(
                                    (
                                        &from.thoroughfare,
                                        &from.house_number,
                                        &from.municipality_nis_code
                                    ),
                                    (
                                        &to.thoroughfare,
                                        &to.house_number,
                                        &to.municipality_nis_code
                                    )
                                );
                            }
                            v1::ChangeOfAddressReason::MunicipalityMerger => {
                                readdressings += 1;
                                assert!(
                                    municipality::mergers()
                                        .iter()
                                        .any(|x| x.new_code.to_string() == to.municipality_nis_code)
                                );
                                assert_ne!(from.municipality_name, to.municipality_name);
                                assert!(m.household_member_insz.is_empty());
                            }
                            other => panic!("unexpected reason {other:?}"),
                        }
                        for a in [from, to] {
                            assert_eq!(a.post_code.len(), 4, "{a:?}");
                            assert!(!a.thoroughfare.is_empty() && !a.house_number.is_empty());
                        }
                    }
                    Payload::DrivingExamPassed(e) => {
                        let exam = date(&e.exam_date);
                        assert!(exam <= t && exam >= days_before(t, 6) && is_working_day(exam));
                        let age = age_on(date(&e.candidate.as_ref().unwrap().date_of_birth), exam);
                        assert!((17..=30).contains(&age), "candidate aged {age}");
                        categories.insert(e.licence_category);
                        residences += 1;
                        let home =
                            municipality::lookup(&e.residence_municipality_nis_code).unwrap();
                        non_flemish += usize::from(home.region != Region::Flanders);
                    }
                }
            }
        }
        // A small share of bis numbers; some twins and re-addressings; mostly Flemish.
        assert!(
            bis > 0 && bis * 50 < persons_seen,
            "{bis} of {persons_seen}"
        );
        assert!(twins > 0);
        assert!(readdressings > 0 && readdressings < 100, "{readdressings}");
        assert!(non_flemish * 5 < residences);
        assert_eq!(categories.len(), 4, "{categories:?}");
    }

    #[test]
    fn ids_and_insz_numbers_are_unique() {
        let mut g = generator(3);
        let mix = Mix::default();
        let mut ids = HashSet::new();
        let mut numbers = HashSet::new();
        for _ in 0..5000 {
            let kind = g.kind(&mix);
            let event = g.valid(kind);
            assert!(ids.insert(event.id.clone()));
            // The second twin's event names the same parents as the first's.
            let second_twin =
                matches!(&event.payload, Some(Payload::Birth(b)) if b.multiple_birth_index == 2);
            let people = if second_twin {
                subject(&event).into_iter().collect()
            } else {
                persons(&event)
            };
            for p in people {
                assert!(numbers.insert(p.insz.clone()), "{} twice", p.insz);
            }
            if let Some(Payload::ChangeOfAddress(m)) = &event.payload {
                for insz in &m.household_member_insz {
                    assert!(numbers.insert(insz.clone()), "{insz} twice");
                }
            }
        }
    }

    #[test]
    fn crowded_birth_dates_spill_to_earlier_dates_but_stay_unique() {
        let mut g = generator(5);
        let mut children = HashSet::new();
        for _ in 0..16_000 {
            let event = g.valid(Kind::Birth);
            assert!(defects(&event, today()).is_empty());
            assert!(children.insert(event.subject.clone()));
        }
    }

    #[test]
    fn invalid_events_carry_exactly_the_defect_they_name() {
        let mut g = generator(11);
        for kind in Kind::ALL {
            for defect in Defect::ALL {
                for _ in 0..60 {
                    match g.invalid_with(kind, defect) {
                        None => assert!(!defect.applies_to(kind)),
                        Some(event) => {
                            let found = defects(&event, today());
                            assert_eq!(
                                found,
                                BTreeSet::from([defect.code()]),
                                "{kind} {defect}: {event:#?}"
                            );
                        }
                    }
                }
            }
        }
        // `invalid` draws among the applicable defects and says which.
        let mut codes = BTreeSet::new();
        for _ in 0..400 {
            let (event, code) = g.invalid(Kind::Death);
            assert_eq!(defects(&event, today()), BTreeSet::from([code]));
            codes.insert(code);
        }
        assert_eq!(codes.len(), 7, "{codes:?}");
    }

    #[test]
    fn specific_defects_look_like_the_real_thing() {
        let mut g = generator(13);
        for _ in 0..50 {
            let event = g
                .invalid_with(Kind::Move, Defect::MunicipalityMerged)
                .unwrap();
            let Some(Payload::ChangeOfAddress(m)) = &event.payload else {
                unreachable!()
            };
            let code = &m.new_address.as_ref().unwrap().municipality_nis_code;
            let Err(MunicipalityError::MergedAway { new_code, .. }) = municipality::lookup(code)
            else {
                panic!("{code} is not merged away");
            };
            assert!(municipality::lookup_code(new_code).is_ok());

            let event = g
                .invalid_with(Kind::DrivingExam, Defect::InszCheckDigits)
                .unwrap();
            assert!(matches!(
                Insz::parse(&event.subject),
                Err(InszError::CheckDigits { .. })
            ));
        }
    }

    #[test]
    fn every_exam_centre_and_known_post_code_is_a_current_municipality() {
        for centre in EXAM_CENTRES {
            let m = municipality::lookup(centre.nis).unwrap();
            assert_eq!(m.region, Region::Flanders, "{}", centre.name);
        }
        for (nis, code) in KNOWN_POST_CODES {
            let nis = format!("{nis:05}");
            assert!(
                matches!(
                    municipality::lookup(&nis),
                    Ok(_) | Err(MunicipalityError::MergedAway { .. })
                ),
                "{nis}"
            );
            assert!((1000..=9999).contains(code));
        }
        for m in municipality::all() {
            let code: u16 = post_code(m.nis_code.get()).parse().unwrap();
            assert!((1000..=9999).contains(&code), "{}", m.name_nl);
        }
    }

    #[test]
    fn kinds_parse_and_print() {
        for kind in Kind::ALL {
            assert_eq!(kind.to_string().parse::<Kind>(), Ok(kind));
        }
        assert_eq!("driving-exam".parse::<Kind>(), Ok(Kind::DrivingExam));
        let err = "marriage".parse::<Kind>().unwrap_err();
        assert!(err.to_string().contains("\"marriage\""), "{err}");
    }

    #[test]
    fn mixes_parse() {
        let mix: Mix = "birth=25,death=25,move=40,driving-exam=10".parse().unwrap();
        assert_eq!(mix, Mix::default());
        assert_eq!(mix.to_string(), "birth=25,death=25,move=40,driving-exam=10");
        let mix: Mix = " move = 3 , birth=1 ".parse().unwrap();
        assert_eq!(mix.weight(Kind::Move), 3);
        assert_eq!(mix.weight(Kind::Birth), 1);
        assert_eq!(mix.weight(Kind::Death), 0);
        assert_eq!(mix.weight(Kind::DrivingExam), 0);
        let mix: Mix = "death=0,driving-exam=1".parse().unwrap();
        let mut g = generator(1);
        assert!((0..200).all(|_| g.kind(&mix) == Kind::DrivingExam));

        let bad = |s: &str| s.parse::<Mix>().unwrap_err();
        assert_eq!(bad(""), MixError::Empty);
        assert_eq!(bad(" , "), MixError::Empty);
        assert_eq!(
            bad("birth=1,marriage=2"),
            MixError::UnknownKind {
                kind: "marriage".to_owned()
            }
        );
        assert_eq!(
            bad("birth=x"),
            MixError::BadWeight {
                kind: Kind::Birth,
                weight: "x".to_owned()
            }
        );
        assert_eq!(
            bad("move=-1"),
            MixError::BadWeight {
                kind: Kind::Move,
                weight: "-1".to_owned()
            }
        );
        assert_eq!(
            bad("death=2.5"),
            MixError::BadWeight {
                kind: Kind::Death,
                weight: "2.5".to_owned()
            }
        );
        assert_eq!(
            bad("birth"),
            MixError::MissingWeight {
                item: "birth".to_owned()
            }
        );
        assert_eq!(
            bad("birth=1,birth=2"),
            MixError::Duplicate { kind: Kind::Birth }
        );
        assert_eq!(bad("birth=0,death=0"), MixError::AllZero);
        assert!(bad("birth=0").to_string().contains("positive weight"));
        assert!(bad("birth=x").to_string().contains("\"x\""));
    }

    #[test]
    fn the_mix_is_respected() {
        let mut g = generator(2);
        let mix = Mix::default();
        let mut counts = [0u32; 4];
        for _ in 0..10_000 {
            counts[g.kind(&mix).index()] += 1;
        }
        // 25/25/40/10 within a few percent.
        for (count, expected) in counts.iter().zip([2500, 2500, 4000, 1000]) {
            assert!(count.abs_diff(expected) < 300, "{counts:?}");
        }
    }

    #[test]
    fn working_day_windows() {
        // Wednesday 2026-03-18: 8 working days back is Monday 2026-03-09.
        assert_eq!(working_days_back(today(), 8), date("2026-03-09"));
        // Sunday 2026-03-22: the window starts on Wednesday 2026-03-11.
        assert_eq!(working_days_back(date("2026-03-22"), 8), date("2026-03-11"));
    }

    #[test]
    fn today_is_clamped_to_what_an_insz_can_encode() {
        let mut g = Generator::new(1, date("1950-01-01"), "urn:x".to_owned());
        let event = g.valid(Kind::Death);
        assert!(defects(&event, EARLIEST_TODAY).is_empty());
    }

    /// The gateway's own validator agrees: every valid event passes, every broken one is
    /// refused with the reason the generator promised.
    #[test]
    fn the_gateway_validator_agrees_with_the_generator() {
        use levensloop_gateway::rejection::Limits;
        use levensloop_gateway::validate::validate;
        // Events are stamped during office hours of the generator's `today`; the simulator
        // passes yesterday, so they are never in the future.
        let now = (today() + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc())
            .unwrap();
        let mut g = generator(11);
        let mix = Mix::default();
        for _ in 0..2_000 {
            let kind = g.kind(&mix);
            let event = g.valid(kind);
            if let Err(r) = validate(&event, now, &Limits::default()) {
                panic!("generated {kind:?} refused: {r}\n{event:?}");
            }
            let (broken, code) = g.invalid(kind);
            match validate(&broken, now, &Limits::default()) {
                Ok(()) => panic!("broken {kind:?} ({code}) accepted: {broken:?}"),
                Err(r) => assert!(
                    r.violations.iter().any(|v| v.reason.code() == code),
                    "broken {kind:?}: expected {code}, got {r}"
                ),
            }
        }
    }
}
