//! Amounts and lengths of time in words, as every message and page of the hub writes them.

use std::time::Duration;

/// A length of time in words: "90 seconds", "1 hour", "2 hours 30 minutes", "3 days".
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 120 && !s.is_multiple_of(60) {
        return plural(s, "second");
    }
    if s.is_multiple_of(86400) {
        return plural(s / 86400, "day");
    }
    let (h, m) = (s / 3600, (s % 3600) / 60);
    match (h, m) {
        (0, m) => plural(m, "minute"),
        (h, 0) => plural(h, "hour"),
        (h, m) => format!("{} {}", plural(h, "hour"), plural(m, "minute")),
    }
}

/// "1 server", "3 servers".
pub fn plural(n: u64, unit: &str) -> String {
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A memory size exactly, in the largest binary unit that divides it ("1536M", "8G"), or in
/// bytes; `labhub_core::resources::parse_memory` reads it back unchanged (for forms).
pub fn memory_text(bytes: u64) -> String {
    for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// The first letter in upper case.
pub(crate) fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_text_reads_back_exactly() {
        for b in [3u64 << 29, 8 << 30, 1000, 4096, 1 << 40] {
            assert_eq!(labhub_core::resources::parse_memory(&memory_text(b)).unwrap(), b);
        }
        assert_eq!(memory_text(3 << 29), "1536M");
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(format_duration(Duration::from_secs(3600)), "1 hour");
        assert_eq!(format_duration(Duration::from_secs(90)), "90 seconds");
        assert_eq!(format_duration(Duration::from_secs(1)), "1 second");
        assert_eq!(format_duration(Duration::from_secs(120)), "2 minutes");
        assert_eq!(format_duration(Duration::from_secs(9000)), "2 hours 30 minutes");
        assert_eq!(format_duration(Duration::from_secs(2 * 86400)), "2 days");
        assert_eq!(format_duration(Duration::from_secs(30 * 86400)), "30 days");
    }
}
