//! The INSZ: the Belgian identification number for social security (*identificatienummer
//! van de sociale zekerheid*).
//!
//! An INSZ is either a national register number (*rijksregisternummer*, for people in the
//! national register) or a bis number (*bisnummer*, allocated by the Crossroads Bank for
//! Social Security to people who are not, such as cross-border workers). Both have 11 digits,
//! `YYMMDD SSS CC`:
//!
//! - `YYMMDD`: the birth date. A bis number adds 20 to the month when the sex was unknown at
//!   allocation and 40 when it was known. Month `00` or day `00` means that part of the birth
//!   date is unknown.
//! - `SSS`: a serial number for people born on the same day, 001–998. Odd for men, even for
//!   women (the sex registered when the number was allocated).
//! - `CC`: the check digits, `97 − (YYMMDDSSS mod 97)`. For people born in 2000 or later, a
//!   `2` is put in front of `YYMMDDSSS` first; that is the only thing that tells the century.
//!
//! The check digits catch every single-digit typo but one: changing the year's last digit by
//! exactly 6 can give the valid number of someone born a century apart (`87073003370`,
//! born 1987, and `81073003370`, born 2081). [`Insz::parse`] has no clock, so a caller that
//! knows the date of the event should also check that the birth date is not after it.
//!
//! Levensloop validates every INSZ an upstream registry sends with [`Insz::parse`], and the
//! registry simulator makes valid ones with [`Insz::generate`] and [`Insz::bis`].

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};

/// Why a string is not a valid INSZ. Each variant names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InszError {
    /// Not 11 digits once the separators are removed.
    #[error("an INSZ has 11 digits, this one has {len}")]
    WrongLength {
        /// The number of digits found.
        len: usize,
    },
    /// A character other than a digit or one of the separators `.`, `-` and space.
    #[error("an INSZ contains only digits and the separators '.', '-' and ' '")]
    NotDigits,
    /// The check digits match neither the rule for people born before 2000 nor the rule for
    /// people born in 2000 or later.
    #[error(
        "check digits {found:02} are wrong: they should be {expected:02} for a birth before 2000 \
         or {expected_2000:02} for a birth in 2000 or later"
    )]
    CheckDigits {
        /// The check digits for a birth before 2000: `97 − (YYMMDDSSS mod 97)`.
        expected: u8,
        /// The check digits for a birth in 2000 or later: `97 − (2YYMMDDSSS mod 97)`.
        expected_2000: u8,
        /// The check digits in the number.
        found: u8,
    },
    /// The birth date part is impossible: a month outside 00–12 (20–32 or 40–52 for a bis
    /// number), a day above 31, or a day the month does not have in that year.
    #[error(
        "the birth date part {year:04}-{month:02}-{day:02} is impossible (month 00-12, bis 20-32 \
         or 40-52; day 00-31 and existing in that month)"
    )]
    InvalidDate {
        /// The full birth year, from the century the check digits imply.
        year: i32,
        /// The month digits as written, including any bis offset.
        month: u8,
        /// The day digits as written.
        day: u8,
    },
    /// The serial number is 000 or 999; only 001–998 are allocated.
    #[error("serial number {serial:03} is out of range (001-998)")]
    SerialOutOfRange {
        /// The serial number found or requested.
        serial: u16,
    },
    /// Only birth years 1900–2099 can be encoded (the check digits tell two centuries apart).
    #[error("birth year {year} cannot be encoded in an INSZ (1900-2099)")]
    YearOutOfRange {
        /// The requested birth year.
        year: i32,
    },
}

/// The sex registered when the number was allocated, as encoded in the serial number's parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sex {
    /// Odd serial number.
    Male,
    /// Even serial number.
    Female,
}

/// Which kind of bis number to allocate: the offset added to the birth month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BisKind {
    /// Month + 20: the sex was unknown at allocation, so the serial's parity means nothing.
    SexUnknown,
    /// Month + 40: the sex was known at allocation and is in the serial's parity.
    SexKnown,
}

impl BisKind {
    fn month_offset(self) -> u8 {
        match self {
            BisKind::SexUnknown => 20,
            BisKind::SexKnown => 40,
        }
    }
}

/// A valid INSZ (national register number or bis number), stored as its 11 digits.
///
/// Construct it with [`Insz::parse`] (or [`str::parse`]), [`Insz::generate`] or [`Insz::bis`];
/// every value of this type has passed the check digits and the date and serial rules.
/// [`Display`](fmt::Display) writes the bare 11 digits, the form to store and exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Insz([u8; 11]);

/// `2 × 10⁹`: the `2` put in front of the nine digits for births in 2000 or later.
const PREFIX_2000: u64 = 2_000_000_000;

fn check_digits(first_nine: u64, from_2000: bool) -> u8 {
    let n = if from_2000 {
        PREFIX_2000 + first_nine
    } else {
        first_nine
    };
    // The remainder is below 97, so the result is 1..=97 and fits in a u8.
    (97 - n % 97) as u8
}

/// Splits a month as written into (bis offset, real month 0–12), or `None` if impossible.
fn split_month(raw: u8) -> Option<(u8, u8)> {
    match raw {
        0..=12 => Some((0, raw)),
        20..=32 => Some((20, raw - 20)),
        40..=52 => Some((40, raw - 40)),
        _ => None,
    }
}

impl Insz {
    /// Parses and validates an INSZ.
    ///
    /// Accepts the bare 11 digits (`85073003328`) and the usual written forms
    /// (`85.07.30-033.28`, `85 07 30 033 28`): the separators `.`, `-` and space are removed
    /// wherever they are, and nothing else is tolerated.
    pub fn parse(input: &str) -> Result<Self, InszError> {
        let mut digits = [0u8; 11];
        let mut len = 0usize;
        for c in input.chars() {
            match c {
                '.' | '-' | ' ' => {}
                '0'..='9' => {
                    // Keep counting past 11 so the error can say how many digits there were.
                    if let Some(slot) = digits.get_mut(len) {
                        *slot = c as u8;
                    }
                    len += 1;
                }
                _ => return Err(InszError::NotDigits),
            }
        }
        if len != 11 {
            return Err(InszError::WrongLength { len });
        }
        let insz = Insz(digits);
        insz.validate()?;
        Ok(insz)
    }

    /// Makes the national register number of a person born on `birth_date` with the given
    /// serial number (001–998; odd for a man, even for a woman).
    pub fn generate(birth_date: NaiveDate, serial: u16) -> Result<Self, InszError> {
        Self::assemble(
            birth_date.year(),
            birth_date.month() as u8,
            birth_date.day() as u8,
            serial,
        )
    }

    /// Makes a bis number for a person born on `birth_date` with the given serial number
    /// (001–998). With [`BisKind::SexKnown`], make the serial odd for a man, even for a woman.
    pub fn bis(birth_date: NaiveDate, kind: BisKind, serial: u16) -> Result<Self, InszError> {
        Self::assemble(
            birth_date.year(),
            birth_date.month() as u8 + kind.month_offset(),
            birth_date.day() as u8,
            serial,
        )
    }

    /// Makes a bis number for a person of whom only the birth year is known: month and day
    /// are written as `00` (plus the bis offset for the month).
    pub fn bis_unknown_birth_date(
        birth_year: i32,
        kind: BisKind,
        serial: u16,
    ) -> Result<Self, InszError> {
        Self::assemble(birth_year, kind.month_offset(), 0, serial)
    }

    fn assemble(year: i32, raw_month: u8, day: u8, serial: u16) -> Result<Self, InszError> {
        if !(1900..=2099).contains(&year) {
            return Err(InszError::YearOutOfRange { year });
        }
        if !(1..=998).contains(&serial) {
            return Err(InszError::SerialOutOfRange { serial });
        }
        let yy = u64::from(year.rem_euclid(100).unsigned_abs());
        let first_nine = yy * 10_000_000
            + u64::from(raw_month) * 100_000
            + u64::from(day) * 1_000
            + u64::from(serial);
        let value = first_nine * 100 + u64::from(check_digits(first_nine, year >= 2000));
        let mut digits = [b'0'; 11];
        let mut rest = value;
        for slot in digits.iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        let insz = Insz(digits);
        // The inputs above cannot make an invalid number, but validating costs nothing and
        // keeps "every Insz is valid" true even if a caller passes a month the date type
        // would not (there is none today).
        insz.validate()?;
        Ok(insz)
    }

    /// The digits `from..to` as a number.
    fn number(&self, from: usize, to: usize) -> u64 {
        self.0
            .get(from..to)
            .unwrap_or(&[])
            .iter()
            .fold(0, |n, d| n * 10 + u64::from(d - b'0'))
    }

    fn first_nine(&self) -> u64 {
        self.number(0, 9)
    }

    /// The month digits as written, with any bis offset.
    fn raw_month(&self) -> u8 {
        self.number(2, 4) as u8
    }

    fn raw_day(&self) -> u8 {
        self.number(4, 6) as u8
    }

    fn validate(&self) -> Result<(), InszError> {
        let found = self.number(9, 11) as u8;
        let expected = check_digits(self.first_nine(), false);
        let expected_2000 = check_digits(self.first_nine(), true);
        // At most one rule can match: the two differ by 2·10⁹ mod 97 = 68, never 0.
        if found != expected && found != expected_2000 {
            return Err(InszError::CheckDigits {
                expected,
                expected_2000,
                found,
            });
        }
        let (month, day) = (self.raw_month(), self.raw_day());
        let invalid = InszError::InvalidDate {
            year: self.birth_year(),
            month,
            day,
        };
        let Some((_, real_month)) = split_month(month) else {
            return Err(invalid);
        };
        if day > 31 {
            return Err(invalid);
        }
        // A partly unknown date (month or day 00) has nothing more to check.
        if real_month != 0
            && day != 0
            && NaiveDate::from_ymd_opt(self.birth_year(), u32::from(real_month), u32::from(day))
                .is_none()
        {
            return Err(invalid);
        }
        let serial = self.serial();
        if !(1..=998).contains(&serial) {
            return Err(InszError::SerialOutOfRange { serial });
        }
        Ok(())
    }

    /// The first year of the birth century, 1900 or 2000, as the check digits tell.
    pub fn century(&self) -> i32 {
        if self.number(9, 11) as u8 == check_digits(self.first_nine(), false) {
            1900
        } else {
            2000
        }
    }

    /// The full birth year (the year is always encoded, even when month and day are not).
    pub fn birth_year(&self) -> i32 {
        self.century() + self.number(0, 2) as i32
    }

    /// The birth date, or `None` when the number says the month or day is unknown (`00`).
    pub fn birth_date(&self) -> Option<NaiveDate> {
        let (_, month) = split_month(self.raw_month())?;
        let day = self.raw_day();
        if month == 0 || day == 0 {
            return None;
        }
        NaiveDate::from_ymd_opt(self.birth_year(), u32::from(month), u32::from(day))
    }

    /// Whether this is a bis number rather than a national register number.
    pub fn is_bis(&self) -> bool {
        self.raw_month() >= 20
    }

    /// The serial number, 001–998.
    pub fn serial(&self) -> u16 {
        self.number(6, 9) as u16
    }

    /// The sex registered at allocation, or `None` for a bis number allocated without it
    /// (month + 20).
    pub fn sex(&self) -> Option<Sex> {
        if matches!(split_month(self.raw_month()), Some((20, _))) {
            return None;
        }
        Some(if self.serial() % 2 == 1 {
            Sex::Male
        } else {
            Sex::Female
        })
    }

    /// The usual written form, `85.07.30-033.28`.
    pub fn formatted(&self) -> String {
        let mut out = String::with_capacity(15);
        for (i, d) in self.0.iter().enumerate() {
            match i {
                2 | 4 | 9 => out.push('.'),
                6 => out.push('-'),
                _ => {}
            }
            out.push(char::from(*d));
        }
        out
    }

    /// The written form with serial and check digits hidden, `85.07.30-***.**`: enough for an
    /// operator to recognise a person in a read model without exposing the full number.
    pub fn masked(&self) -> String {
        let mut out = self.formatted();
        out.replace_range(9.., "***.**");
        out
    }
}

impl fmt::Display for Insz {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.0 {
            fmt::Write::write_char(f, char::from(d))?;
        }
        Ok(())
    }
}

impl FromStr for Insz {
    type Err = InszError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Insz::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    #[test]
    fn hand_computed_pre_2000() {
        // 850730033 = 97 × 8 770 412 + 69, so the check digits are 97 − 69 = 28.
        let insz = Insz::parse("85073003328").unwrap();
        assert_eq!(insz.birth_date(), Some(date(1985, 7, 30)));
        assert_eq!(insz.century(), 1900);
        assert_eq!(insz.serial(), 33);
        assert_eq!(insz.sex(), Some(Sex::Male));
        assert!(!insz.is_bis());
        assert_eq!(Insz::generate(date(1985, 7, 30), 33).unwrap(), insz);
    }

    #[test]
    fn hand_computed_from_2000() {
        // 2 000 101 001 = 97 × 20 619 597 + 92, so the check digits are 97 − 92 = 05.
        let insz = Insz::parse("00010100105").unwrap();
        assert_eq!(insz.birth_date(), Some(date(2000, 1, 1)));
        assert_eq!(insz.century(), 2000);
        assert_eq!(Insz::generate(date(2000, 1, 1), 1).unwrap(), insz);
    }

    #[test]
    fn check_digits_choose_the_century() {
        // Same nine digits; 000101001 = 97 × 1 031 + 24 gives 73 for 1900-01-01.
        let old = Insz::parse("00010100173").unwrap();
        let new = Insz::parse("00010100105").unwrap();
        assert_eq!(old.birth_date(), Some(date(1900, 1, 1)));
        assert_eq!(new.birth_date(), Some(date(2000, 1, 1)));
        assert_eq!(Insz::generate(date(1900, 1, 1), 1).unwrap(), old);
    }

    #[test]
    fn the_two_rules_never_both_match() {
        assert_ne!(PREFIX_2000 % 97, 0);
    }

    #[test]
    fn leap_day_depends_on_the_century() {
        // 29 February exists in 2000 but not in 1900.
        let leap = Insz::generate(date(2000, 2, 29), 2).unwrap();
        assert_eq!(leap.birth_date(), Some(date(2000, 2, 29)));
        let first_nine = leap.first_nine();
        let as_1900 = format!("{first_nine:09}{:02}", check_digits(first_nine, false));
        assert_eq!(
            Insz::parse(&as_1900),
            Err(InszError::InvalidDate {
                year: 1900,
                month: 2,
                day: 29
            })
        );
    }

    #[test]
    fn separators_are_accepted() {
        let bare = Insz::parse("85073003328").unwrap();
        assert_eq!(Insz::parse("85.07.30-033.28").unwrap(), bare);
        assert_eq!(Insz::parse("85 07 30 033 28").unwrap(), bare);
        assert_eq!("85.07.30-033.28".parse::<Insz>().unwrap(), bare);
    }

    #[test]
    fn formats() {
        let insz = Insz::parse("85 07 30 033 28").unwrap();
        assert_eq!(insz.to_string(), "85073003328");
        assert_eq!(insz.formatted(), "85.07.30-033.28");
        assert_eq!(insz.masked(), "85.07.30-***.**");
    }

    #[test]
    fn errors_name_the_rule() {
        assert_eq!(
            Insz::parse("8507300332"),
            Err(InszError::WrongLength { len: 10 })
        );
        assert_eq!(
            Insz::parse("850730033280"),
            Err(InszError::WrongLength { len: 12 })
        );
        assert_eq!(Insz::parse(""), Err(InszError::WrongLength { len: 0 }));
        assert_eq!(Insz::parse("85/07/30-033.28"), Err(InszError::NotDigits));
        assert_eq!(Insz::parse("8507300332x"), Err(InszError::NotDigits));
        assert_eq!(
            Insz::parse("85073003329"),
            Err(InszError::CheckDigits {
                expected: 28,
                expected_2000: 57,
                found: 29
            })
        );
        let message = Insz::parse("85073003329").unwrap_err().to_string();
        assert!(message.contains("before 2000") && message.contains("2000 or later"));
        // Month 13 with correct check digits.
        let n = 851301001;
        let s = format!("{n:09}{:02}", check_digits(n, false));
        assert!(matches!(
            Insz::parse(&s),
            Err(InszError::InvalidDate { month: 13, .. })
        ));
        // Serial 000 and 999 with correct check digits.
        for serial in [0u64, 999] {
            let n = 850730000 + serial;
            let s = format!("{n:09}{:02}", check_digits(n, false));
            assert_eq!(
                Insz::parse(&s),
                Err(InszError::SerialOutOfRange {
                    serial: serial as u16
                })
            );
        }
    }

    #[test]
    fn generate_rejects_what_cannot_be_encoded() {
        assert_eq!(
            Insz::generate(date(1899, 12, 31), 1),
            Err(InszError::YearOutOfRange { year: 1899 })
        );
        assert_eq!(
            Insz::generate(date(2100, 1, 1), 1),
            Err(InszError::YearOutOfRange { year: 2100 })
        );
        assert_eq!(
            Insz::generate(date(1985, 7, 30), 0),
            Err(InszError::SerialOutOfRange { serial: 0 })
        );
        assert_eq!(
            Insz::generate(date(1985, 7, 30), 999),
            Err(InszError::SerialOutOfRange { serial: 999 })
        );
    }

    #[test]
    fn bis_numbers() {
        // 854730034 = 97 × 8 811 649 + 81, so the check digits are 97 − 81 = 16.
        let known = Insz::parse("85473003416").unwrap();
        assert!(known.is_bis());
        assert_eq!(known.birth_date(), Some(date(1985, 7, 30)));
        assert_eq!(known.sex(), Some(Sex::Female));
        assert_eq!(
            Insz::bis(date(1985, 7, 30), BisKind::SexKnown, 34).unwrap(),
            known
        );

        // 852730033 = 97 × 8 791 031 + 26, so the check digits are 97 − 26 = 71.
        let unknown_sex = Insz::parse("85273003371").unwrap();
        assert!(unknown_sex.is_bis());
        assert_eq!(unknown_sex.sex(), None);
        assert_eq!(unknown_sex.birth_date(), Some(date(1985, 7, 30)));
        assert_eq!(
            Insz::bis(date(1985, 7, 30), BisKind::SexUnknown, 33).unwrap(),
            unknown_sex
        );

        // 854000002 = 97 × 8 804 123 + 71, so the check digits are 97 − 71 = 26.
        let no_date = Insz::parse("85400000226").unwrap();
        assert_eq!(no_date.birth_date(), None);
        assert_eq!(no_date.birth_year(), 1985);
        assert_eq!(
            Insz::bis_unknown_birth_date(1985, BisKind::SexKnown, 2).unwrap(),
            no_date
        );

        let young = Insz::bis(date(2010, 12, 31), BisKind::SexUnknown, 998).unwrap();
        assert_eq!(young.century(), 2000);
        assert_eq!(young.birth_date(), Some(date(2010, 12, 31)));
    }

    #[test]
    fn partly_unknown_birth_date_in_the_national_register() {
        let n = 850700001; // month known, day 00
        let s = format!("{n:09}{:02}", check_digits(n, false));
        let insz = Insz::parse(&s).unwrap();
        assert!(!insz.is_bis());
        assert_eq!(insz.birth_date(), None);
        assert_eq!(insz.birth_year(), 1985);
    }

    #[test]
    fn a_century_flip_is_the_one_single_digit_change_the_check_misses() {
        // 870730033 = 97 × 8 976 598 + 27, so 1987-07-30 serial 033 has check digits 70.
        let born_1987 = Insz::parse("87073003370").unwrap();
        assert_eq!(born_1987.birth_date(), Some(date(1987, 7, 30)));
        // 2 810 730 033 = 97 × 28 976 598 + 27: the same check digits under the 2000+ rule.
        let born_2081 = Insz::parse("81073003370").unwrap();
        assert_eq!(born_2081.birth_date(), Some(date(2081, 7, 30)));
    }

    fn birth_dates() -> impl Strategy<Value = NaiveDate> {
        let first = date(1900, 1, 1);
        let days = (date(2099, 12, 31) - first).num_days();
        (0..=days).prop_map(move |d| first + chrono::Duration::days(d))
    }

    fn any_valid() -> impl Strategy<Value = Insz> {
        (birth_dates(), 1u16..=998, 0u8..3).prop_map(|(birth, serial, kind)| match kind {
            0 => Insz::generate(birth, serial).unwrap(),
            1 => Insz::bis(birth, BisKind::SexUnknown, serial).unwrap(),
            _ => Insz::bis(birth, BisKind::SexKnown, serial).unwrap(),
        })
    }

    proptest! {
        #[test]
        fn generated_numbers_parse_back(birth in birth_dates(), serial in 1u16..=998) {
            let insz = Insz::generate(birth, serial).unwrap();
            prop_assert_eq!(Insz::parse(&insz.to_string()), Ok(insz));
            prop_assert_eq!(Insz::parse(&insz.formatted()), Ok(insz));
            prop_assert_eq!(insz.birth_date(), Some(birth));
            prop_assert_eq!(insz.serial(), serial);
            prop_assert!(!insz.is_bis());
            let sex = if serial % 2 == 1 { Sex::Male } else { Sex::Female };
            prop_assert_eq!(insz.sex(), Some(sex));
        }

        #[test]
        fn generated_bis_numbers_parse_back(birth in birth_dates(), serial in 1u16..=998) {
            for kind in [BisKind::SexUnknown, BisKind::SexKnown] {
                let insz = Insz::bis(birth, kind, serial).unwrap();
                prop_assert_eq!(Insz::parse(&insz.to_string()), Ok(insz));
                prop_assert!(insz.is_bis());
                prop_assert_eq!(insz.birth_date(), Some(birth));
            }
        }

        /// A changed digit shifts `YYMMDDSSS + CC` by d·10^k with 0 < |d| < 10. 97 is prime and
        /// divides neither d nor 10^k, so the rule that matched before no longer matches. The
        /// other century's rule is off by 2·10⁹ ≡ 68 (mod 97), and d·10^k ≡ ±29 (mod 97) has
        /// exactly one solution among single-digit changes: the year's last digit changed by 6
        /// (10⁷·6 ≡ 68). So every single-digit change is caught except that one, which may
        /// parse as a number of someone born a century apart (see `a_century_flip_...`).
        #[test]
        fn every_single_digit_change_is_caught(insz in any_valid()) {
            let digits: Vec<u8> = insz.to_string().bytes().collect();
            for position in 0..digits.len() {
                for replacement in b'0'..=b'9' {
                    if replacement == digits[position] {
                        continue;
                    }
                    let mut changed = digits.clone();
                    changed[position] = replacement;
                    let changed = String::from_utf8(changed).unwrap();
                    if let Ok(other) = Insz::parse(&changed) {
                        prop_assert!(
                            position == 1 && replacement.abs_diff(digits[position]) == 6,
                            "{} (from {}) parsed as valid", changed, insz
                        );
                        prop_assert_ne!(other.century(), insz.century());
                    }
                }
            }
        }
    }
}
