//! User-space frames named in the agent: each address is placed in its process's memory map,
//! then named from its object's symbol tables by blazesym. Where the agent may, it opens the
//! objects through `/proc/PID/map_files`, so a file in another container's filesystem (or one
//! replaced since) is the one read; otherwise by the path the map names, which is right for the
//! processes of the agent's own container, nginx among them.
//!
//! What a walk of a program built without frame pointers returns past its first frame is
//! often not a return address at all. An address outside every executable mapping is where
//! such a walk went wrong: the stack is cut there rather than shown with invented frames.

use std::collections::HashMap;
use std::path::Path;

use blazesym::symbolize::source::{Process, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};

/// What a user-space address is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserFrame {
    /// A function, by its (demangled) name.
    Function(String),
    /// Inside an object whose symbols do not cover it (a stripped binary): `[object]`.
    Object(String),
    /// Executable memory backed by no file (code generated at run time).
    Anonymous,
    /// Outside every executable mapping, or the process is gone.
    Unknown,
}

impl UserFrame {
    /// The frame as a folded stack shows it.
    pub fn label(&self) -> String {
        match self {
            Self::Function(name) => name.replace(';', ":"),
            Self::Object(name) => format!("[{name}]"),
            Self::Anonymous => "[anonymous]".into(),
            Self::Unknown => "[unknown]".into(),
        }
    }
}

/// One executable mapping of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// The file's name (last path component), or `[vdso]`-style pseudo names; `None` when
    /// anonymous.
    pub object: Option<String>,
}

/// The executable mappings in a `/proc/PID/maps` text, by start address.
pub fn executable_mappings(maps: &str) -> Vec<Mapping> {
    let mut found: Vec<Mapping> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            if !perms.contains('x') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let path = fields.nth(3);
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                object: path.map(|p| {
                    Path::new(p)
                        .file_name()
                        .map_or_else(|| p.to_string(), |n| n.to_string_lossy().into_owned())
                }),
            })
        })
        .collect();
    found.sort_by_key(|m| m.start);
    found
}

fn mapping_of(mappings: &[Mapping], address: u64) -> Option<&Mapping> {
    let index = mappings
        .partition_point(|m| m.start <= address)
        .checked_sub(1)?;
    mappings.get(index).filter(|m| address < m.end)
}

/// Names user-space stacks, caching each object's symbols across processes.
pub struct UserSymbols {
    symbolizer: Symbolizer,
    map_files: bool,
}

impl std::fmt::Debug for UserSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSymbols").finish_non_exhaustive()
    }
}

impl UserSymbols {
    /// `map_files`: whether `/proc/PID/map_files` may be opened (see `TracingAccess`).
    pub fn new(map_files: bool) -> Self {
        Self {
            symbolizer: Symbolizer::builder()
                .enable_code_info(false)
                .enable_inlined_fns(false)
                .build(),
            map_files,
        }
    }

    /// Names `lookups` (addresses as a stack holds them: a return address names its call) of
    /// process `tgid`.
    pub fn name(&self, tgid: u32, addresses: &[u64]) -> HashMap<u64, UserFrame> {
        let maps = std::fs::read_to_string(format!("/proc/{tgid}/maps")).unwrap_or_default();
        self.name_in(tgid, &executable_mappings(&maps), addresses)
    }

    fn name_in(
        &self,
        tgid: u32,
        mappings: &[Mapping],
        addresses: &[u64],
    ) -> HashMap<u64, UserFrame> {
        let mut named = HashMap::with_capacity(addresses.len());
        let mut in_files = Vec::new();
        for &address in addresses {
            match mapping_of(mappings, address) {
                None => {
                    named.insert(address, UserFrame::Unknown);
                }
                Some(Mapping { object: None, .. }) => {
                    named.insert(address, UserFrame::Anonymous);
                }
                Some(_) => in_files.push(address),
            }
        }
        if in_files.is_empty() || tgid == 0 {
            return named;
        }
        let mut process = Process::new(tgid.into());
        process.debug_syms = false;
        process.perf_map = false;
        process.map_files = self.map_files;
        let source = Source::Process(process);
        let symbolized = self
            .symbolizer
            .symbolize(&source, Input::AbsAddr(&in_files))
            .unwrap_or_default();
        for (index, &address) in in_files.iter().enumerate() {
            let frame = match symbolized.get(index) {
                Some(Symbolized::Sym(symbol)) => UserFrame::Function(symbol.name.to_string()),
                _ => match mapping_of(mappings, address).and_then(|m| m.object.clone()) {
                    Some(object) => UserFrame::Object(object),
                    None => UserFrame::Unknown,
                },
            };
            named.insert(address, frame);
        }
        named
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a2a000 r--p 00000000 fe:01 1049 /usr/sbin/nginx
55d0c0a2a000-55d0c0b20000 r-xp 0002a000 fe:01 1049 /usr/sbin/nginx
7f1c2a028000-7f1c2a17d000 r-xp 00028000 fe:01 2201 /usr/lib/x86_64-linux-gnu/libc.so.6
7f1c2b000000-7f1c2b010000 rwxp 00000000 00:00 0
7ffd3d7f3000-7ffd3d7f5000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn only_executable_mappings_are_kept_with_their_object_names() {
        let found = executable_mappings(MAPS);
        let objects: Vec<Option<&str>> = found.iter().map(|m| m.object.as_deref()).collect();
        assert_eq!(
            objects,
            [Some("nginx"), Some("libc.so.6"), None, Some("[vdso]")]
        );
        assert_eq!(
            mapping_of(&found, 0x55d0_c0a2_a000)
                .unwrap()
                .object
                .as_deref(),
            Some("nginx")
        );
        assert!(
            mapping_of(&found, 0x55d0_c0b2_0000).is_none(),
            "end excluded"
        );
        assert!(
            mapping_of(&found, 0x55d0_c0a0_0010).is_none(),
            "not executable"
        );
        assert!(mapping_of(&found, 1).is_none());
    }

    #[test]
    fn addresses_outside_files_are_named_without_reading_symbols() {
        let symbols = UserSymbols::new(true);
        let found = executable_mappings(MAPS);
        let named = symbols.name_in(0, &found, &[0x10, 0x7f1c_2b00_0100]);
        assert_eq!(named[&0x10], UserFrame::Unknown);
        assert_eq!(named[&0x7f1c_2b00_0100], UserFrame::Anonymous);
        assert_eq!(UserFrame::Object("nginx".into()).label(), "[nginx]");
        assert_eq!(UserFrame::Function("a;b".into()).label(), "a:b");
    }

    #[inline(never)]
    fn a_function_of_this_test() -> u64 {
        a_function_of_this_test as *const () as u64
    }

    #[test]
    fn a_function_of_this_process_is_named_from_its_symbols() {
        let address = a_function_of_this_test();
        let symbols = UserSymbols::new(true);
        let named = symbols.name(std::process::id(), &[address + 1]);
        match &named[&(address + 1)] {
            UserFrame::Function(name) => {
                assert!(name.ends_with("a_function_of_this_test"), "named {name}")
            }
            other => panic!("not named from the test binary's symbols: {other:?}"),
        }
    }
}
