//! The `Date:` header value, cached per shard.
//!
//! Every response carries a `Date:` header in IMF-fixdate form
//! (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7). Formatting it per
//! response would cost a clock read and a conversion each time, so a shard
//! keeps one [`HttpDate`] and refreshes it once a second; responses copy its
//! 29 bytes. The formatting itself is the `httpdate` crate's, written into
//! a fixed array (no allocation); only the once-a-second cache is ours.
//!
//! Invariant: [`HttpDate::as_bytes`] is always exactly [`HttpDate::LEN`] bytes
//! of ASCII. Times before 1970 are shown as the epoch and times after the
//! year 9999 as the last second of 9999, so the width never changes.

use std::time::{SystemTime, UNIX_EPOCH};

/// `9999-12-31T23:59:59Z`, the last second a four-digit year can show.
const MAX_SECS: u64 = 253_402_300_799;

/// A formatted IMF-fixdate, refreshed by its shard once a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpDate {
    bytes: [u8; HttpDate::LEN],
    /// The Unix second `bytes` shows; `refresh` within the same second is free.
    secs: u64,
}

impl HttpDate {
    /// Length of an IMF-fixdate in bytes.
    pub const LEN: usize = 29;

    /// The date of `now`.
    pub fn new(now: SystemTime) -> HttpDate {
        let secs = unix_secs(now);
        HttpDate {
            bytes: format(secs),
            secs,
        }
    }

    /// Shows `now`; does nothing if `now` is in the second already shown.
    pub fn refresh(&mut self, now: SystemTime) {
        let secs = unix_secs(now);
        if secs != self.secs {
            self.bytes = format(secs);
            self.secs = secs;
        }
    }

    /// The formatted date, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    #[inline]
    pub fn as_bytes(&self) -> &[u8; HttpDate::LEN] {
        &self.bytes
    }
}

impl Default for HttpDate {
    /// The current time.
    fn default() -> HttpDate {
        HttpDate::new(SystemTime::now())
    }
}

fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .min(MAX_SECS)
}

/// Formats `secs` (at most [`MAX_SECS`]) since the Unix epoch with the
/// `httpdate` crate, writing into a fixed array: no allocation. The crate
/// panics past year 9999 and before 1970, which [`unix_secs`] rules out.
fn format(secs: u64) -> [u8; HttpDate::LEN] {
    use std::io::Write as _;
    let mut b = [0u8; HttpDate::LEN];
    let date = httpdate::HttpDate::from(UNIX_EPOCH + std::time::Duration::from_secs(secs));
    let mut dst: &mut [u8] = &mut b;
    write!(dst, "{date}").expect("an IMF-fixdate is 29 bytes");
    debug_assert!(dst.is_empty(), "an IMF-fixdate fills all 29 bytes");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];

    fn at(secs: u64) -> String {
        let d = HttpDate::new(UNIX_EPOCH + Duration::from_secs(secs));
        String::from_utf8(d.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn formats_known_timestamps() {
        // Expected values from `date -u -d @N '+%a, %d %b %Y %H:%M:%S GMT'`.
        let cases = [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (784_111_777, "Sun, 06 Nov 1994 08:49:37 GMT"),
            (951_782_400, "Tue, 29 Feb 2000 00:00:00 GMT"),
            (951_868_800, "Wed, 01 Mar 2000 00:00:00 GMT"),
            (1_234_567_890, "Fri, 13 Feb 2009 23:31:30 GMT"),
            (1_709_164_800, "Thu, 29 Feb 2024 00:00:00 GMT"),
            (2_147_483_647, "Tue, 19 Jan 2038 03:14:07 GMT"),
            (2_147_483_648, "Tue, 19 Jan 2038 03:14:08 GMT"),
            (4_102_444_800, "Fri, 01 Jan 2100 00:00:00 GMT"),
            (4_107_542_400, "Mon, 01 Mar 2100 00:00:00 GMT"),
            (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ];
        for (secs, want) in cases {
            assert_eq!(at(secs), want, "secs {secs}");
        }
    }

    #[test]
    fn day_before_march_in_non_leap_century() {
        // 2100 is not a leap year: 28 Feb is followed by 1 Mar.
        assert_eq!(at(4_107_542_400 - 86_400), "Sun, 28 Feb 2100 00:00:00 GMT");
        // 2000 is: 28 Feb is followed by 29 Feb.
        assert_eq!(at(951_782_400 - 1), "Mon, 28 Feb 2000 23:59:59 GMT");
    }

    #[test]
    fn clamps_out_of_range_times() {
        let before = HttpDate::new(UNIX_EPOCH - Duration::from_secs(10));
        assert_eq!(before.as_bytes(), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(at(u64::MAX / 2), "Fri, 31 Dec 9999 23:59:59 GMT");
    }

    #[test]
    fn matches_a_day_by_day_walk() {
        // Walk every day from 1970 to 2400 with an independent calendar and
        // compare the date part.
        let mut year = 1970u64;
        let mut month = 1u64;
        let mut day = 1u64;
        let mut weekday = 4usize;
        for days in 0..(430 * 366) {
            let f = format(days * 86_400 + 3_661);
            let want = format!(
                "{}, {:02} {} {:04} 01:01:01 GMT",
                WEEKDAYS[weekday],
                day,
                MONTHS[month as usize - 1],
                year
            );
            assert_eq!(std::str::from_utf8(&f).unwrap(), want);
            let leap =
                (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
            let len = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > len {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
            weekday = (weekday + 1) % 7;
        }
    }

    #[test]
    fn refresh_updates_only_on_a_new_second() {
        let mut d = HttpDate::new(UNIX_EPOCH + Duration::from_millis(784_111_777_100));
        d.refresh(UNIX_EPOCH + Duration::from_millis(784_111_777_900));
        assert_eq!(d.as_bytes(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        d.refresh(UNIX_EPOCH + Duration::from_secs(784_111_778));
        assert_eq!(d.as_bytes(), b"Sun, 06 Nov 1994 08:49:38 GMT");
        assert_eq!(d.as_bytes().len(), HttpDate::LEN);
    }
}
