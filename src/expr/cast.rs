//! Conversions between text and values, as Spark's non-ANSI `CAST` does
//! them: parsing never fails loudly (unparsable text is NULL) and numbers
//! print the way the JVM prints them.
//!
//! Everything here is allocation-free: parsers borrow their input, printers
//! append to a caller-owned buffer, digit work happens in stack arrays.

/// `"true"` / `"false"`.
#[inline]
pub(crate) fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// Appends an integer in decimal.
#[inline]
pub(crate) fn push_int(buf: &mut String, i: i64) {
    buf.push_str(itoa::Buffer::new().format(i));
}

/// The shortest decimal digits that round-trip a finite, non-zero double:
/// `|x| = 0.d1 d2 ... dn * 10^exp`, with no leading or trailing zero digit.
pub(crate) struct Decimal {
    /// Digit values 0..=9; only `digits[..len]` are meaningful.
    pub digits: [u8; 24],
    /// Number of digits (at most 17).
    pub len: usize,
    /// Decimal exponent of the digit string read as `0.d1d2...`.
    pub exp: i32,
    /// Sign of the value.
    pub neg: bool,
}

impl Decimal {
    /// Decomposes `x` (finite and non-zero) via ryu's shortest repr.
    pub(crate) fn of(x: f64) -> Decimal {
        let mut ryu = ryu::Buffer::new();
        let text = ryu.format_finite(x.abs());
        let (mantissa, exp10) = match text.split_once('e') {
            Some((m, e)) => (m, e.parse::<i32>().unwrap_or(0)),
            None => (text, 0),
        };
        let mut d = Decimal {
            digits: [0; 24],
            len: 0,
            exp: 0,
            neg: x.is_sign_negative(),
        };
        let mut int_digits = 0i32;
        let mut zeros_after_point = 0i32;
        let mut after_point = false;
        for b in mantissa.bytes() {
            if b == b'.' {
                after_point = true;
            } else if d.len == 0 && b == b'0' {
                if after_point {
                    zeros_after_point += 1;
                }
            } else if d.len < d.digits.len() {
                d.digits[d.len] = b - b'0';
                d.len += 1;
                if !after_point {
                    int_digits += 1;
                }
            }
        }
        while d.len > 1 && d.digits[d.len - 1] == 0 {
            d.len -= 1;
        }
        d.exp = int_digits - zeros_after_point + exp10;
        d
    }
}

/// Appends a double the way `CAST(x AS string)` prints it in Spark (the
/// JVM's `Double.toString` with shortest round-trip digits): `1.0`,
/// `0.001`, `1234567.0`, `1.0E7`, `1.0E-4`, `-0.0`, `NaN`, `Infinity`.
pub(crate) fn push_float(buf: &mut String, x: f64) {
    if x.is_nan() {
        buf.push_str("NaN");
        return;
    }
    if x.is_infinite() {
        buf.push_str(if x > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    if x == 0.0 {
        buf.push_str(if x.is_sign_negative() { "-0.0" } else { "0.0" });
        return;
    }
    if (1e-3..1e7).contains(&x.abs()) {
        // In this range ryu prints exactly what the JVM does ("0.001",
        // "1.0", "1234567.5"): half the cost of the digit walk below.
        buf.push_str(ryu::Buffer::new().format_finite(x));
        return;
    }
    push_digits(buf, x);
}

/// The JVM's `Double.toString` layout built from the shortest digits of a
/// finite, non-zero `x`.
fn push_digits(buf: &mut String, x: f64) {
    let d = Decimal::of(x);
    let digits = &d.digits[..d.len];
    let digit = |buf: &mut String, v: u8| buf.push((b'0' + v) as char);
    if d.neg {
        buf.push('-');
    }
    // Plain notation for 1e-3 <= |x| < 1e7, i.e. -2 <= exp <= 7.
    if (-2..=7).contains(&d.exp) {
        if d.exp <= 0 {
            buf.push_str("0.");
            for _ in 0..-d.exp {
                buf.push('0');
            }
            digits.iter().for_each(|&v| digit(buf, v));
        } else {
            let point = d.exp as usize;
            for i in 0..point.max(digits.len()) {
                if i == point {
                    buf.push('.');
                }
                digit(buf, digits.get(i).copied().unwrap_or(0));
            }
            if point >= digits.len() {
                buf.push_str(".0");
            }
        }
    } else {
        digit(buf, digits[0]);
        buf.push('.');
        if digits.len() == 1 {
            buf.push('0');
        } else {
            digits[1..].iter().for_each(|&v| digit(buf, v));
        }
        buf.push('E');
        push_int(buf, (d.exp - 1) as i64);
    }
}

/// ASCII whitespace or control byte, as Spark trims them around numbers.
#[inline]
fn is_blank(b: u8) -> bool {
    b <= b' ' || b == 0x7f
}

fn trim_blank(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_ascii() && is_blank(c as u8))
}

/// Spark's text to integer (`UTF8String.toLong`): surrounding blanks are
/// ignored, an optional sign, decimal digits, and an optional fractional
/// part of digits that is discarded (`'1.9'` is 1). Anything else, or a
/// value outside int64, is `None`.
pub(crate) fn parse_long(s: &str) -> Option<i64> {
    let b = trim_blank(s).as_bytes();
    let (neg, digits) = match b.first()? {
        b'-' => (true, &b[1..]),
        b'+' => (false, &b[1..]),
        _ => (false, b),
    };
    if digits.is_empty() {
        return None;
    }
    // Accumulate negatively so that i64::MIN parses.
    let mut acc: i64 = 0;
    let mut i = 0;
    while i < digits.len() {
        let c = digits[i];
        i += 1;
        if c == b'.' {
            break;
        }
        if !c.is_ascii_digit() {
            return None;
        }
        acc = acc.checked_mul(10)?.checked_sub((c - b'0') as i64)?;
    }
    if !digits[i..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if neg { Some(acc) } else { acc.checked_neg() }
}

/// Spark's text to double: the JVM's `Double.parseDouble` (blanks trimmed,
/// optional `d`/`f` suffix, `Infinity`, `NaN`) plus Spark's extra literals
/// `inf`, `infinity`, `nan` in any case. Anything else is `None`.
pub(crate) fn parse_double(s: &str) -> Option<f64> {
    let t = trim_blank(s);
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    if unsigned.eq_ignore_ascii_case("nan") {
        // Spark accepts `NaN`/`nan`, but not a signed NaN.
        return (unsigned.len() == t.len()).then_some(f64::NAN);
    }
    let b = t.as_bytes();
    let number = match b {
        [.., prev, b'd' | b'D' | b'f' | b'F'] if prev.is_ascii_digit() || *prev == b'.' => {
            &t[..t.len() - 1]
        }
        _ => t,
    };
    number.parse::<f64>().ok()
}

/// Spark's text to boolean: `t`, `true`, `y`, `yes`, `1` and `f`, `false`,
/// `n`, `no`, `0`, in any case, surrounding blanks ignored.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    let t = trim_blank(s);
    let is = |words: &[&str]| words.iter().any(|w| w.eq_ignore_ascii_case(t));
    if is(&["t", "true", "y", "yes", "1"]) {
        Some(true)
    } else if is(&["f", "false", "n", "no", "0"]) {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn float(x: f64) -> String {
        let mut s = String::new();
        push_float(&mut s, x);
        s
    }

    #[test]
    fn floats_print_like_the_jvm() {
        assert_eq!(float(1.0), "1.0");
        assert_eq!(float(-1.5), "-1.5");
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(0.001), "0.001");
        assert_eq!(float(0.0001), "1.0E-4");
        assert_eq!(float(0.00012345), "1.2345E-4");
        assert_eq!(float(1234567.0), "1234567.0");
        assert_eq!(float(9999999.0), "9999999.0");
        assert_eq!(float(10000000.0), "1.0E7");
        assert_eq!(float(12345678.9), "1.23456789E7");
        assert_eq!(float(100.0), "100.0");
        assert_eq!(float(123.456), "123.456");
        assert_eq!(float(1e21), "1.0E21");
        assert_eq!(float(1e-7), "1.0E-7");
        assert_eq!(float(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(float(f64::MAX), "1.7976931348623157E308");
        assert_eq!(float(f64::MIN_POSITIVE), "2.2250738585072014E-308");
        assert_eq!(float(0.0), "0.0");
        assert_eq!(float(-0.0), "-0.0");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(f64::INFINITY), "Infinity");
        assert_eq!(float(f64::NEG_INFINITY), "-Infinity");
    }

    #[test]
    fn ryu_shortcut_matches_the_digit_walk() {
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mantissa = (state >> 11) as f64 / (1u64 << 53) as f64;
            let x = mantissa * 10f64.powi((state % 12) as i32 - 3);
            for x in [x, -x, x.round(), (x * 1000.0).round() / 1000.0] {
                if x == 0.0 {
                    continue;
                }
                let mut walked = String::new();
                push_digits(&mut walked, x);
                assert_eq!(float(x), walked, "{x:?}");
            }
        }
        assert_eq!(float(0.001), "0.001");
        assert_eq!(float(9999999.999999998), "9999999.999999998");
    }

    #[test]
    fn decimal_digits() {
        let d = Decimal::of(-0.00123);
        assert_eq!(
            (&d.digits[..d.len], d.exp, d.neg),
            (&[1, 2, 3][..], -2, true)
        );
        let d = Decimal::of(1e16);
        assert_eq!((&d.digits[..d.len], d.exp), (&[1][..], 17));
        let d = Decimal::of(120.5);
        assert_eq!((&d.digits[..d.len], d.exp), (&[1, 2, 0, 5][..], 3));
    }

    #[test]
    fn text_to_long() {
        assert_eq!(parse_long("42"), Some(42));
        assert_eq!(parse_long("  -42\t"), Some(-42));
        assert_eq!(parse_long("+7"), Some(7));
        assert_eq!(parse_long("1.9"), Some(1));
        assert_eq!(parse_long("-1.9"), Some(-1));
        assert_eq!(parse_long("1."), Some(1));
        assert_eq!(parse_long("9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_long("-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_long("9223372036854775808"), None);
        assert_eq!(parse_long("abc"), None);
        assert_eq!(parse_long("1e3"), None);
        assert_eq!(parse_long("1.5x"), None);
        assert_eq!(parse_long(""), None);
        assert_eq!(parse_long("-"), None);
        assert_eq!(parse_long(" "), None);
        assert_eq!(parse_long("1 2"), None);
    }

    #[test]
    fn text_to_double() {
        assert_eq!(parse_double("1.5"), Some(1.5));
        assert_eq!(parse_double(" -2e3 "), Some(-2000.0));
        assert_eq!(parse_double(".5"), Some(0.5));
        assert_eq!(parse_double("1.5d"), Some(1.5));
        assert_eq!(parse_double("2F"), Some(2.0));
        assert_eq!(parse_double("Infinity"), Some(f64::INFINITY));
        assert_eq!(parse_double("-inf"), Some(f64::NEG_INFINITY));
        assert!(parse_double("NaN").unwrap().is_nan());
        assert_eq!(parse_double("-nan"), None);
        assert_eq!(parse_double("abc"), None);
        assert_eq!(parse_double(""), None);
        assert_eq!(parse_double("1.5dd"), None);
    }

    #[test]
    fn text_to_bool() {
        for t in ["true", "T", " yes ", "y", "1", "TRUE"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "F", "no", "n", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("2"), None);
        assert_eq!(parse_bool("maybe"), None);
    }
}
