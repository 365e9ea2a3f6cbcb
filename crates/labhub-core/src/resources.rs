//! CPU, memory and GPU amounts, with one parser for what people type ("1.5", "2G").

use std::fmt;

use serde::{Deserialize, Serialize};

/// What one server may use. CPU in thousandths of a core so sums stay exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    /// CPU limit in millicores (1000 = one core).
    pub cpu_millis: u32,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// Number of GPUs requested.
    pub gpus: u32,
}

/// A resource amount that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("'{0}' is not a CPU amount: write a number of cores such as 1, 0.5 or 2.25")]
    Cpu(String),
    #[error("'{0}' is not a memory size: write a number with a unit such as 512M, 2G or 1.5G")]
    Memory(String),
}

/// A CPU or memory amount as people write it, in a form, a JSON body or the configuration
/// file: a number (`2`, `0.5`), or text such as "0.5" or "2G".
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Amount {
    /// A bare number: cores, or bytes.
    Number(f64),
    /// Text as typed.
    Text(String),
}

impl Amount {
    /// As text, trimmed: numbers read as what they would be typed as.
    pub fn text(&self) -> String {
        match self {
            Amount::Number(n) => n.to_string(),
            Amount::Text(t) => t.trim().to_string(),
        }
    }

    /// Cores ("0.5", 2) as millicores.
    pub fn cpu_millis(&self) -> Result<u32, ResourceError> {
        parse_cpu(&self.text())
    }

    /// A number of bytes, or a size such as "2G".
    pub fn memory_bytes(&self) -> Result<u64, ResourceError> {
        parse_memory(&self.text())
    }
}

/// Reads cores ("1", "0.5", "2.25") into millicores; at most three decimals, at most 1024 cores.
pub fn parse_cpu(raw: &str) -> Result<u32, ResourceError> {
    let err = || ResourceError::Cpu(raw.to_string());
    let s = raw.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() || frac.len() > 3 {
        return Err(err());
    }
    if !int.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    let whole: u32 = if int.is_empty() { 0 } else { int.parse().map_err(|_| err())? };
    let mut milli: u32 = 0;
    for (i, b) in frac.bytes().enumerate() {
        milli += u32::from(b - b'0') * 10u32.pow(2 - i as u32);
    }
    if whole > 1024 {
        return Err(err());
    }
    Ok(whole * 1000 + milli)
}

/// Reads a memory size with a binary unit (K, M, G, T; an optional trailing "i"/"B"); a bare number is bytes.
pub fn parse_memory(raw: &str) -> Result<u64, ResourceError> {
    let err = || ResourceError::Memory(raw.to_string());
    let s = raw.trim();
    let upper = s.to_ascii_uppercase();
    let t = upper.trim_end_matches('B').trim_end_matches('I');
    let (num, mult) = match t.chars().last() {
        Some('K') => (&t[..t.len() - 1], 1u64 << 10),
        Some('M') => (&t[..t.len() - 1], 1 << 20),
        Some('G') => (&t[..t.len() - 1], 1 << 30),
        Some('T') => (&t[..t.len() - 1], 1 << 40),
        Some(c) if c.is_ascii_digit() => (t, 1),
        _ => return Err(err()),
    };
    let value: f64 = num.trim().parse().map_err(|_| err())?;
    if !value.is_finite() || value < 0.0 {
        return Err(err());
    }
    let bytes = (value * mult as f64).round();
    if bytes > (1u64 << 50) as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

/// Formats millicores as cores ("1.5").
pub fn format_cpu(cpu_millis: u32) -> String {
    let whole = cpu_millis / 1000;
    let frac = cpu_millis % 1000;
    if frac == 0 { whole.to_string() } else { format!("{whole}.{frac:03}").trim_end_matches('0').to_string() }
}

/// Formats bytes with the largest binary unit that keeps one decimal ("1.5 GiB").
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || (value - value.round()).abs() < 0.05 {
        format!("{} {}", value.round(), UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

impl fmt::Display for Resources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} CPU, {}", format_cpu(self.cpu_millis), format_bytes(self.memory_bytes))?;
        if self.gpus > 0 {
            write!(f, ", {} GPU", self.gpus)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_amount_reads_the_same_as_a_number_or_as_text() {
        let read = |json: &str| serde_json::from_str::<Amount>(json).unwrap();
        assert_eq!(read("0.5").cpu_millis(), Ok(500));
        assert_eq!(read("\" 0.5 \"").cpu_millis(), Ok(500));
        assert_eq!(read("2").cpu_millis(), read("\"2\"").cpu_millis());
        assert_eq!(read("1073741824").memory_bytes(), Ok(1 << 30));
        assert_eq!(read("\"1G\"").memory_bytes(), Ok(1 << 30));
        // A fractional number of bytes rounds as the same text does, not down.
        assert_eq!(read("1.5").memory_bytes(), read("\"1.5\"").memory_bytes());
        assert!(read("-1").memory_bytes().is_err());
        assert!(read("1e16").memory_bytes().is_err(), "past the largest size, as a number too");
        assert!(read("\"lots\"").cpu_millis().is_err());
    }

    #[test]
    fn cpu_amounts() {
        assert_eq!(parse_cpu("1").unwrap(), 1000);
        assert_eq!(parse_cpu("0.5").unwrap(), 500);
        assert_eq!(parse_cpu(".25").unwrap(), 250);
        assert_eq!(parse_cpu("2.125").unwrap(), 2125);
        for bad in ["", ".", "-1", "1.2345", "two", "1e3", "5000"] {
            assert!(parse_cpu(bad).is_err(), "{bad}");
        }
        assert_eq!(format_cpu(1500), "1.5");
        assert_eq!(format_cpu(2000), "2");
        assert_eq!(format_cpu(125), "0.125");
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory("512M").unwrap(), 512 << 20);
        assert_eq!(parse_memory("2G").unwrap(), 2 << 30);
        assert_eq!(parse_memory("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_memory("1024").unwrap(), 1024);
        for bad in ["", "G", "-1G", "lots", "1X", "nan"] {
            assert!(parse_memory(bad).is_err(), "{bad}");
        }
        assert_eq!(format_bytes(3 << 29), "1.5 GiB");
        assert_eq!(format_bytes(512 << 20), "512 MiB");
    }
}
