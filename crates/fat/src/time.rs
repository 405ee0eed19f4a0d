//! FAT timestamps: local date and time with 2-second resolution, 1980-01-01 to 2107-12-31.

use crate::Error;

/// The one timestamp written into every date/time field of an image (creation, last write,
/// last access date, volume label).
///
/// FAT stores no time zone; the value is written as given (use UTC for reproducibility). Seconds
/// are stored in 2-second units, so an odd second is rounded down when the value is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FatTime {
    year: u16,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

impl Default for FatTime {
    fn default() -> Self {
        Self::MIN
    }
}

fn days_in_month(year: u16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        _ => 0,
    }
}

impl FatTime {
    /// 1980-01-01 00:00:00, the earliest time FAT can store (and the default epoch).
    pub const MIN: FatTime = FatTime {
        year: 1980,
        month: 1,
        day: 1,
        hour: 0,
        minute: 0,
        second: 0,
    };

    /// 2107-12-31 23:59:58, the latest time FAT can store.
    pub const MAX: FatTime = FatTime {
        year: 2107,
        month: 12,
        day: 31,
        hour: 23,
        minute: 59,
        second: 58,
    };

    /// A calendar date and time; `second` is rounded down to an even number.
    pub fn new(
        year: u16,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
    ) -> Result<Self, Error> {
        let bad = |reason| Err(Error::InvalidTime { reason });
        if !(1980..=2107).contains(&year) {
            return bad("FAT stores years 1980 to 2107 only");
        }
        if !(1..=12).contains(&month) {
            return bad("month out of range");
        }
        if day == 0 || day > days_in_month(year, month) {
            return bad("day out of range");
        }
        if hour > 23 || minute > 59 || second > 59 {
            return bad("time of day out of range");
        }
        Ok(Self {
            year,
            month,
            day,
            hour,
            minute,
            second: second & !1,
        })
    }

    /// Seconds since 1970-01-01 00:00:00 UTC (e.g. `SOURCE_DATE_EPOCH`), as a UTC calendar time.
    pub fn from_unix(secs: u64) -> Result<Self, Error> {
        // 4354819199 = 2107-12-31 23:59:59 UTC; the bound also keeps the arithmetic small.
        if !(315_532_800..=4_354_819_199).contains(&secs) {
            return Err(Error::InvalidTime {
                reason: "FAT stores 1980-01-01 to 2107-12-31 only",
            });
        }
        let days = secs / 86_400;
        let rem = secs % 86_400;
        // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
        let z = days + 719_468;
        let era = z / 146_097;
        let doe = z % 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + u64::from(month <= 2);
        let narrow = |v: u64| u8::try_from(v).unwrap_or(u8::MAX);
        Self::new(
            u16::try_from(year).unwrap_or(u16::MAX),
            narrow(month),
            narrow(day),
            narrow(rem / 3600),
            narrow(rem % 3600 / 60),
            narrow(rem % 60),
        )
    }

    /// The on-disk date: bits 15–9 years since 1980, 8–5 month, 4–0 day.
    pub fn fat_date(&self) -> u16 {
        ((self.year - 1980) << 9) | (u16::from(self.month) << 5) | u16::from(self.day)
    }

    /// The on-disk time: bits 15–11 hours, 10–5 minutes, 4–0 seconds / 2.
    pub fn fat_time(&self) -> u16 {
        (u16::from(self.hour) << 11) | (u16::from(self.minute) << 5) | u16::from(self.second / 2)
    }

    /// (year, month, day, hour, minute, second) as stored.
    pub fn parts(&self) -> (u16, u8, u8, u8, u8, u8) {
        (
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding() {
        assert_eq!(FatTime::MIN.fat_date(), 0x0021);
        assert_eq!(FatTime::MIN.fat_time(), 0);
        let t = FatTime::new(2024, 5, 17, 13, 45, 31).unwrap();
        assert_eq!(t.parts(), (2024, 5, 17, 13, 45, 30));
        assert_eq!(t.fat_date(), (44 << 9) | (5 << 5) | 17);
        assert_eq!(t.fat_time(), (13 << 11) | (45 << 5) | 15);
        assert_eq!(FatTime::MAX.fat_date(), (127 << 9) | (12 << 5) | 31);
    }

    #[test]
    fn unix() {
        assert_eq!(FatTime::from_unix(315_532_800).unwrap(), FatTime::MIN);
        // 2024-05-17 13:45:31 UTC
        assert_eq!(
            FatTime::from_unix(1_715_953_531).unwrap(),
            FatTime::new(2024, 5, 17, 13, 45, 30).unwrap()
        );
        // 2000-02-29 (leap day in a century year divisible by 400)
        assert_eq!(
            FatTime::from_unix(951_782_400).unwrap(),
            FatTime::new(2000, 2, 29, 0, 0, 0).unwrap()
        );
        assert_eq!(FatTime::from_unix(4_354_819_199).unwrap(), FatTime::MAX);
        for bad in [0, 315_532_799, 4_354_819_200, u64::MAX] {
            assert!(FatTime::from_unix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn refusals() {
        assert!(FatTime::new(1979, 12, 31, 0, 0, 0).is_err());
        assert!(FatTime::new(2108, 1, 1, 0, 0, 0).is_err());
        assert!(FatTime::new(2023, 2, 29, 0, 0, 0).is_err());
        assert!(FatTime::new(2100, 2, 29, 0, 0, 0).is_err());
        assert!(FatTime::new(2024, 2, 29, 0, 0, 0).is_ok());
        assert!(FatTime::new(2024, 4, 31, 0, 0, 0).is_err());
        assert!(FatTime::new(2024, 13, 1, 0, 0, 0).is_err());
        assert!(FatTime::new(2024, 1, 0, 0, 0, 0).is_err());
        assert!(FatTime::new(2024, 1, 1, 24, 0, 0).is_err());
        assert!(FatTime::new(2024, 1, 1, 0, 60, 0).is_err());
        assert!(FatTime::new(2024, 1, 1, 0, 0, 60).is_err());
    }
}
