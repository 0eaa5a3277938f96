//! Field values: exact money and instants, parsed without allocating on the hot path.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone};
use chrono_tz::Tz;

/// The largest DECIMAL(18,2) mantissa plus one.
const LIMIT: i128 = 1_000_000_000_000_000_000;

/// How decimal text is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MoneyFormat {
    /// The text is in minor units (cents).
    pub minor_units: bool,
    /// A thousands separator to skip (ASCII).
    pub thousands: Option<char>,
    /// The decimal separator (ASCII).
    pub point: char,
    /// Fractions of a cent are rounded half up (away from zero) to the cent instead of
    /// refusing the value: WeChat Pay writes its fee with five decimals.
    pub round_half_up: bool,
}

impl Default for MoneyFormat {
    fn default() -> Self {
        Self {
            minor_units: false,
            thousands: None,
            point: '.',
            round_half_up: false,
        }
    }
}

/// The scale of [`parse_money_fine`]: totals sum every amount exactly at this scale, so a bill
/// whose amounts carry fractions of a cent (and whose totals do) is checked without rounding.
pub const FINE_SCALE: u32 = 6;

/// A decimal amount as a scale-6 mantissa (up to six decimals, exact), for the totals.
pub fn parse_money_fine(v: &str, f: MoneyFormat) -> Result<i128, String> {
    const TO_FINE: i128 = 10_000;
    if let Some(m) = parse_money_fast(v, f) {
        return Ok(m * TO_FINE);
    }
    let (neg, digits) = split_sign(v);
    if digits.is_empty() {
        return Err(format!("{v:?} is not a decimal amount"));
    }
    let m = general_money(v, digits, f, FINE_SCALE)?;
    Ok(if neg { -m } else { m })
}

/// A decimal amount as a scale-2 mantissa: exact, at most two decimals (more only when they
/// are zeros), within DECIMAL(18,2).
#[inline(always)]
pub fn parse_money(v: &str, f: MoneyFormat) -> Result<i128, String> {
    match parse_money_fast(v, f) {
        Some(m) => Ok(m),
        None => other_money(v, f),
    }
}

/// The sign, and the text after it.
#[inline(always)]
fn split_sign(v: &str) -> (bool, &str) {
    match v.as_bytes().first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v),
    }
}

/// The common case ([`plain_decimal`]) with its sign; `None` for everything else.
#[inline(always)]
fn parse_money_fast(v: &str, f: MoneyFormat) -> Option<i128> {
    let (neg, digits) = split_sign(v);
    plain_decimal(digits.as_bytes(), f).map(|m| if neg { -m } else { m })
}

/// Everything [`plain_decimal`] leaves: separators, minor units, more decimals, and errors.
#[inline(never)]
fn other_money(v: &str, f: MoneyFormat) -> Result<i128, String> {
    let (neg, digits) = split_sign(v);
    if digits.is_empty() {
        return Err(format!("{v:?} is not a decimal amount"));
    }
    let m = if f.round_half_up {
        let fine = general_money(v, digits, f, FINE_SCALE)?;
        // Half up, away from zero, on the magnitude: 0.005 is 0.01 and so -0.005 is -0.01.
        (fine + 5_000) / 10_000
    } else {
        general_money(v, digits, f, 2)?
    };
    Ok(if neg { -m } else { m })
}

/// The magnitude of `digits` as a mantissa of `scale` decimals; more decimals than `scale`
/// are refused unless they are zeros.
fn general_money(v: &str, digits: &str, f: MoneyFormat, scale: u32) -> Result<i128, String> {
    // u64 while reading: `whole` stays below LIMIT (10^18), so `whole * 10 + 9` fits.
    let limit = LIMIT as u64;
    let mut whole: u64 = 0;
    let mut frac: u64 = 0;
    let mut frac_digits = 0u32;
    let mut in_frac = false;
    let mut any_digit = false;
    let (point, thousands) = (f.point as u8, f.thousands.map(|c| c as u8));
    for &c in digits.as_bytes() {
        match c {
            b'0'..=b'9' => {
                any_digit = true;
                let d = u64::from(c - b'0');
                if in_frac {
                    if frac_digits < scale {
                        frac = frac * 10 + d;
                        frac_digits += 1;
                    } else if d != 0 {
                        return Err(if scale == 2 {
                            format!("{v:?} has more than two decimals (a fraction of a cent; `round = \"half_up\"` rounds it)")
                        } else {
                            format!("{v:?} has more than {scale} decimals")
                        });
                    }
                } else {
                    whole = whole * 10 + d;
                    if whole >= limit {
                        return Err(format!("{v:?} does not fit DECIMAL(18,2)"));
                    }
                }
            }
            c if c == point && !in_frac && !f.minor_units => in_frac = true,
            c if Some(c) == thousands && !in_frac => {}
            _ => return Err(format!("{v:?} is not a decimal amount")),
        }
    }
    if !any_digit {
        return Err(format!("{v:?} is not a decimal amount"));
    }
    let unit = 10i128.pow(scale);
    let m = if f.minor_units {
        i128::from(whole) * unit / 100
    } else {
        i128::from(whole) * unit + i128::from(frac * 10u64.pow(scale - frac_digits))
    };
    if m >= LIMIT * (unit / 100) {
        return Err(format!("{v:?} does not fit DECIMAL(18,2)"));
    }
    Ok(m)
}

/// The common case in one pass: at most 16 whole digits (so within DECIMAL(18,2)), then nothing or the decimal point
/// and one or two digits. Anything else (separators, minor units, more decimals, errors) is
/// `None` and takes the general path.
#[inline]
fn plain_decimal(b: &[u8], f: MoneyFormat) -> Option<i128> {
    if f.minor_units || b.len() > 20 {
        return None;
    }
    let mut whole: u64 = 0;
    let mut i = 0;
    while i < b.len() && i <= 16 && b[i].is_ascii_digit() {
        whole = whole * 10 + u64::from(b[i] - b'0');
        i += 1;
    }
    if i == 0 || i > 16 {
        return None;
    }
    let cents = match &b[i..] {
        [] => 0,
        [p, d] if *p == f.point as u8 && d.is_ascii_digit() => u64::from(d - b'0') * 10,
        [p, d, e] if *p == f.point as u8 && d.is_ascii_digit() && e.is_ascii_digit() => {
            u64::from(d - b'0') * 10 + u64::from(e - b'0')
        }
        _ => return None,
    };
    Some(i128::from(whole * 100 + cents))
}

/// One accepted way of writing an instant.
#[derive(Debug, Clone)]
enum Layout {
    /// `%Y-%m-%d %H:%M:%S`, parsed by hand (the common case).
    Iso,
    /// Any other chrono format; `date_only` when it has no time of day.
    Chrono { format: String, date_only: bool },
    /// RFC 3339 with its own offset.
    Rfc3339,
    /// Seconds since the epoch.
    Unix,
    /// Milliseconds since the epoch.
    UnixMs,
}

/// Parses instants in one or more layouts, in a zone, caching the zone's offset per hour.
#[derive(Debug, Clone)]
pub struct TimeParser {
    layouts: Vec<Layout>,
    zone: Tz,
    /// (local hour since the epoch, offset seconds) of the last conversion.
    cached: Option<(i64, i64)>,
    /// The last `YYYY-MM-DD` read and its midnight in seconds (as if UTC): a bill's rows
    /// share a few days.
    day: Option<([u8; 10], i64)>,
}

impl TimeParser {
    /// `formats` as a template writes them; `zone` for text without an offset.
    pub fn new(formats: &[&str], zone: Tz) -> Self {
        let layouts = formats
            .iter()
            .map(|f| match *f {
                "%Y-%m-%d %H:%M:%S" => Layout::Iso,
                "rfc3339" => Layout::Rfc3339,
                "unix" => Layout::Unix,
                "unix_ms" => Layout::UnixMs,
                other => Layout::Chrono {
                    format: other.to_string(),
                    date_only: !["%H", "%I", "%T", "%R", "%s", "%X", "%c"]
                        .iter()
                        .any(|t| other.contains(t)),
                },
            })
            .collect();
        Self {
            layouts,
            zone,
            cached: None,
            day: None,
        }
    }

    /// Microseconds since the epoch, UTC.
    pub fn parse(&mut self, v: &str) -> Result<i64, String> {
        for i in 0..self.layouts.len() {
            let got = match &self.layouts[i] {
                Layout::Iso => self.iso(v).map(|l| self.local_secs_to_utc(l)),
                Layout::Chrono { format, date_only } => {
                    let local = if *date_only {
                        NaiveDate::parse_from_str(v, format)
                            .ok()
                            .map(|d| d.and_time(NaiveTime::MIN))
                    } else {
                        NaiveDateTime::parse_from_str(v, format).ok()
                    };
                    local.map(|l| self.local_to_utc(l))
                }
                Layout::Rfc3339 => DateTime::parse_from_rfc3339(v)
                    .ok()
                    .map(|t| Ok(t.timestamp_micros())),
                Layout::Unix => v
                    .parse::<i64>()
                    .ok()
                    .and_then(|s| s.checked_mul(1_000_000))
                    .map(Ok),
                Layout::UnixMs => v
                    .parse::<i64>()
                    .ok()
                    .and_then(|s| s.checked_mul(1_000))
                    .map(Ok),
            };
            if let Some(r) = got {
                return r;
            }
        }
        Err(format!("{v:?} is not a time in {}", self.describe()))
    }

    fn describe(&self) -> String {
        let names: Vec<String> = self
            .layouts
            .iter()
            .map(|l| match l {
                Layout::Iso => "\"%Y-%m-%d %H:%M:%S\"".to_string(),
                Layout::Chrono { format, .. } => format!("{format:?}"),
                Layout::Rfc3339 => "rfc3339".into(),
                Layout::Unix => "unix".into(),
                Layout::UnixMs => "unix_ms".into(),
            })
            .collect();
        format!("the format {}", names.join(" or "))
    }

    fn local_to_utc(&mut self, local: NaiveDateTime) -> Result<i64, String> {
        let micros = i64::from(local.and_utc().timestamp_subsec_micros());
        Ok(self.local_secs_to_utc(local.and_utc().timestamp())? + micros)
    }

    /// Whole seconds of local wall time (counted as if UTC) to UTC microseconds since the
    /// epoch; the zone is asked once an hour of the bill.
    fn local_secs_to_utc(&mut self, secs: i64) -> Result<i64, String> {
        let hour = secs.div_euclid(3600);
        let offset = match self.cached {
            Some((h, off)) if h == hour => off,
            _ => {
                let local = DateTime::from_timestamp(secs, 0)
                    .map(|t| t.naive_utc())
                    .ok_or_else(|| format!("{secs} seconds is out of range"))?;
                let at = self
                    .zone
                    .from_local_datetime(&local)
                    .earliest()
                    .ok_or_else(|| {
                        format!(
                            "{local} does not exist in {} (a daylight-saving gap)",
                            self.zone
                        )
                    })?;
                let off = i64::from(at.offset().fix().local_minus_utc());
                // Only an hour whose offset is unambiguous may be cached.
                if self.zone.from_local_datetime(&local).single().is_some() {
                    self.cached = Some((hour, off));
                }
                off
            }
        };
        Ok((secs - offset) * 1_000_000)
    }
}

impl TimeParser {
    /// `YYYY-MM-DD HH:MM:SS`, exactly: local seconds since the epoch (counted as if UTC).
    #[inline]
    fn iso(&mut self, v: &str) -> Option<i64> {
        let b: &[u8; 19] = v.as_bytes().try_into().ok()?;
        if b[4] != b'-' || b[7] != b'-' || b[10] != b' ' || b[13] != b':' || b[16] != b':' {
            return None;
        }
        let two = |i: usize| -> Option<i64> {
            let (t, u) = (b[i].wrapping_sub(b'0'), b[i + 1].wrapping_sub(b'0'));
            (t < 10 && u < 10).then(|| i64::from(t * 10 + u))
        };
        let mut ymd = [0u8; 10];
        ymd.copy_from_slice(&b[..10]);
        let day = match self.day {
            Some((last, day)) if last == ymd => day,
            _ => {
                let year = two(0)? * 100 + two(2)?;
                let date = NaiveDate::from_ymd_opt(year as i32, two(5)? as u32, two(8)? as u32)?;
                let day = date.and_time(NaiveTime::MIN).and_utc().timestamp();
                self.day = Some((ymd, day));
                day
            }
        };
        let (h, m, s) = (two(11)?, two(14)?, two(17)?);
        (h < 24 && m < 60 && s < 60).then_some(day + h * 3600 + m * 60 + s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(v: &str) -> Result<i128, String> {
        parse_money(v, MoneyFormat::default())
    }

    proptest::proptest! {
        #[test]
        fn the_fast_path_agrees_with_the_general_one(v in "[0-9]{0,19}([.][0-9]{0,3})?[x]?") {
            let f = MoneyFormat::default();
            if let Some(m) = plain_decimal(v.as_bytes(), f) {
                proptest::prop_assert_eq!(Ok(m), general_money(&v, &v, f, 2));
                proptest::prop_assert_eq!(Ok(m * 10_000), parse_money_fine(&v, f));
            }
        }
    }

    #[test]
    fn money_keeps_cents_exact_and_refuses_fractions_of_a_cent() {
        assert_eq!(money("12.30"), Ok(1230));
        assert_eq!(money("-0.01"), Ok(-1));
        assert_eq!(money("+7"), Ok(700));
        assert_eq!(money("1.000"), Ok(100));
        assert_eq!(money(".5"), Ok(50));
        assert!(money("1.005").is_err());
        assert!(money("12.3.4").is_err());
        assert!(money("-").is_err());
        assert!(money("1e5").is_err());
        assert!(money("99999999999999999999").is_err());
        let eu = MoneyFormat {
            thousands: Some('.'),
            point: ',',
            ..MoneyFormat::default()
        };
        assert_eq!(parse_money("1.234,50", eu), Ok(123450));
        let cents = MoneyFormat {
            minor_units: true,
            ..MoneyFormat::default()
        };
        assert_eq!(parse_money("-1999", cents), Ok(-1999));
        assert!(parse_money("19.99", cents).is_err());
        assert_eq!(parse_money_fine("-1999", cents), Ok(-19_990_000));
    }

    #[test]
    fn fractions_of_a_cent_round_half_up_only_when_asked_and_stay_exact_in_totals() {
        let round = MoneyFormat {
            round_half_up: true,
            ..MoneyFormat::default()
        };
        // WeChat Pay's fee column: five decimals.
        assert_eq!(parse_money("0.05940", round), Ok(6));
        assert_eq!(parse_money("0.00500", round), Ok(1));
        assert_eq!(parse_money("0.00499", round), Ok(0));
        assert_eq!(parse_money("-0.00500", round), Ok(-1));
        assert_eq!(parse_money("-0.05940", round), Ok(-6));
        assert_eq!(parse_money("12.30", round), Ok(1230));
        assert!(
            parse_money("0.0000001", round).is_err(),
            "past six decimals"
        );
        let e = money("0.05940").expect_err("refused without round");
        assert!(e.contains("half_up"), "{e}");
        let f = MoneyFormat::default();
        assert_eq!(parse_money_fine("0.05940", f), Ok(59_400));
        assert_eq!(parse_money_fine("-0.02000", f), Ok(-20_000));
        assert_eq!(parse_money_fine("1519.50", f), Ok(1_519_500_000));
        assert!(parse_money_fine("1.0000001", f).is_err());
        assert!(parse_money_fine("abc", f).is_err());
    }

    proptest::proptest! {
        /// Reading a run of times with the day remembered gives what a fresh parser gives.
        #[test]
        fn a_remembered_day_changes_no_answer(
            times in proptest::collection::vec("20(26|25)-(0[1-9]|1[0-3]|1x)-(0[0-9]|2[0-9]|3[0-2]) [0-2][0-9]:[0-6][0-9]:[0-6][0-9]", 1..20),
        ) {
            let sh: Tz = "Asia/Shanghai".parse().expect("zone");
            let mut kept = TimeParser::new(&["%Y-%m-%d %H:%M:%S"], sh);
            for t in &times {
                let fresh = TimeParser::new(&["%Y-%m-%d %H:%M:%S"], sh).parse(t);
                proptest::prop_assert_eq!(kept.parse(t), fresh, "{}", t);
            }
        }
    }

    proptest::proptest! {
        /// The exact layout's own reader gives what chrono's general one gives, in a zone with
        /// daylight saving too.
        #[test]
        fn the_exact_layout_agrees_with_chrono(
            t in "20(26|25|00)-(0[0-9]|1[0-3])-(0[0-9]|[1-3][0-9]) ([0-1][0-9]|2[0-5]):[0-6][0-9]:[0-5][0-9]",
            zone in proptest::sample::select(vec!["Asia/Shanghai", "America/New_York", "UTC"]),
        ) {
            let z: Tz = zone.parse().expect("zone");
            let fast = TimeParser::new(&["%Y-%m-%d %H:%M:%S"], z).parse(&t);
            let mut general = TimeParser::new(&["%Y-%m-%d %H:%M:%S"], z);
            general.layouts = vec![Layout::Chrono {
                format: "%Y-%m-%d %H:%M:%S".into(),
                date_only: false,
            }];
            proptest::prop_assert_eq!(fast.ok(), general.parse(&t).ok(), "{}", t);
        }
    }

    #[test]
    fn times_are_converted_from_the_zone_and_from_offsets() {
        let sh: Tz = "Asia/Shanghai".parse().expect("zone");
        let mut p = TimeParser::new(&["%Y-%m-%d %H:%M:%S", "rfc3339", "%Y-%m-%d"], sh);
        let want = DateTime::parse_from_rfc3339("2026-11-20T00:00:00+08:00")
            .expect("time")
            .timestamp_micros();
        assert_eq!(p.parse("2026-11-20 00:00:00"), Ok(want));
        assert_eq!(p.parse("2026-11-19T16:00:00Z"), Ok(want));
        assert_eq!(p.parse("2026-11-20"), Ok(want));
        assert!(p.parse("2026-13-20 00:00:00").is_err());
        assert!(p.parse("20/11/2026").is_err());
        let ny: Tz = "America/New_York".parse().expect("zone");
        let mut p = TimeParser::new(&["%Y-%m-%d %H:%M:%S"], ny);
        assert!(
            p.parse("2026-03-08 02:30:00").is_err(),
            "inside the DST gap"
        );
        let before = p.parse("2026-03-08 01:59:59").expect("before");
        let after = p.parse("2026-03-08 03:00:00").expect("after");
        assert_eq!(after - before, 1_000_000);
    }
}
