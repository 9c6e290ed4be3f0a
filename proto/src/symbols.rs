//! The kernel symbols a probe request may name: a contract between whoever asks (the
//! experiment file, `loadlab agent capture`) and the agent that attaches probes, checked on both
//! sides with the same rule.

/// At most this many symbols are probed on request, besides the built-in ones.
pub const MAX_EXTRA_SYMBOLS: usize = 64;

/// Whether `name` can be a kernel symbol: what a probe request may ask for.
fn check_symbol_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'$'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a kernel symbol name (letters, digits, `_`, `.` and `$`, at most 128)"
        ))
    }
}

/// Why a list of symbols to probe cannot be probed: which name (by index), or the list itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadSymbols {
    pub index: Option<usize>,
    pub message: String,
}

/// Checks a list of symbols to probe: at most [`MAX_EXTRA_SYMBOLS`], each a symbol name.
pub fn check_symbol_names(names: &[String]) -> Result<(), BadSymbols> {
    if names.len() > MAX_EXTRA_SYMBOLS {
        return Err(BadSymbols {
            index: None,
            message: format!(
                "at most {MAX_EXTRA_SYMBOLS} kernel symbols can be probed, got {}",
                names.len()
            ),
        });
    }
    for (index, name) in names.iter().enumerate() {
        check_symbol_name(name).map_err(|message| BadSymbols {
            index: Some(index),
            message,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_names_are_checked() {
        assert!(check_symbol_name("tcp_v4_connect").is_ok());
        assert!(check_symbol_name("__mutex_lock.constprop.0").is_ok());
        for bad in ["", "a b", "x;rm", &"a".repeat(129)] {
            assert!(check_symbol_name(bad).is_err(), "{bad:?}");
        }
        let list = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            check_symbol_names(&list(&["tcp_v4_connect", "epmutex"])),
            Ok(())
        );
        assert_eq!(
            check_symbol_names(&list(&["tcp_v4_connect", "a b"]))
                .unwrap_err()
                .index,
            Some(1)
        );
        let too_many = list(&["f"; MAX_EXTRA_SYMBOLS + 1]);
        let error = check_symbol_names(&too_many).unwrap_err();
        assert_eq!(error.index, None);
        assert!(error.message.contains("at most 64"), "{}", error.message);
    }
}
