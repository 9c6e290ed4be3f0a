//! User-space frames named in the agent: each address is placed in its process's memory map,
//! then named from its object's ELF symbol tables by blazesym. Objects are opened through the
//! process's own root (`/proc/PID/root/...`), so a file in another container's filesystem is the
//! one read. Both need ptrace access to the process: root with CAP_SYS_PTRACE, or its own user.
//!
//! What a walk of a program built without frame pointers returns past its first frame is
//! often not a return address at all. An address outside every executable mapping is where
//! such a walk went wrong: the stack is cut there rather than shown with invented frames.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};

/// What a user-space address is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum UserFrame {
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
    /// Where the mapping starts in its file.
    pub offset: u64,
    pub backing: Backing,
}

/// What backs a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backing {
    /// A file: its path as the process sees it, and its device and inode (one file mapped by
    /// many processes is read once).
    File {
        path: String,
        device: String,
        inode: u64,
    },
    /// A kernel-provided area such as `[vdso]`.
    Special(String),
    Anonymous,
}

impl Mapping {
    /// The object's short name: `libc.so.6`, `vdso`.
    fn object(&self) -> Option<String> {
        match &self.backing {
            Backing::File { path, .. } => Some(
                Path::new(path)
                    .file_name()
                    .map_or_else(|| path.clone(), |n| n.to_string_lossy().into_owned()),
            ),
            Backing::Special(name) => Some(name.trim_matches(|c| c == '[' || c == ']').into()),
            Backing::Anonymous => None,
        }
    }
}

/// The executable mappings in a `/proc/PID/maps` text, by start address.
pub(crate) fn executable_mappings(maps: &str) -> Vec<Mapping> {
    let mut found: Vec<Mapping> = maps
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, char::is_whitespace);
            let (range, perms, offset) = (fields.next()?, fields.next()?, fields.next()?);
            let (device, inode) = (fields.next()?, fields.next()?);
            if !perms.contains('x') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            let path = fields.next().map(str::trim).unwrap_or_default();
            let inode: u64 = inode.parse().ok()?;
            let backing = if path.starts_with('/') && inode != 0 {
                Backing::File {
                    path: path.to_string(),
                    device: device.to_string(),
                    inode,
                }
            } else if path.starts_with('[') {
                Backing::Special(path.to_string())
            } else {
                Backing::Anonymous
            };
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                backing,
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

/// Names user-space stacks, reading each object once across processes.
pub(crate) struct UserSymbols {
    symbolizer: Symbolizer,
    /// Per file (device, inode), the path it was first opened by.
    opened: std::cell::RefCell<HashMap<(String, u64), PathBuf>>,
}

impl std::fmt::Debug for UserSymbols {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSymbols").finish_non_exhaustive()
    }
}

impl Default for UserSymbols {
    fn default() -> Self {
        Self {
            symbolizer: Symbolizer::builder()
                .enable_code_info(false)
                .enable_inlined_fns(false)
                .build(),
            opened: std::cell::RefCell::default(),
        }
    }
}

impl UserSymbols {
    /// Names `addresses` (as a stack holds them: a return address names its call) of process
    /// `tgid`.
    pub fn name(&self, tgid: u32, addresses: &[u64]) -> HashMap<u64, UserFrame> {
        let refused = |path: &str, error: &std::io::Error| {
            if error.kind() == std::io::ErrorKind::PermissionDenied {
                tracing::warn!(
                    %path,
                    "another user's process: its user-space frames stay unnamed (the agent \
                     needs CAP_SYS_PTRACE)"
                );
            }
        };
        let path = format!("/proc/{tgid}/maps");
        let maps = std::fs::read_to_string(&path).unwrap_or_else(|error| {
            refused(&path, &error);
            String::new()
        });
        let root = format!("/proc/{tgid}/root/");
        if let Err(error) = std::fs::metadata(&root) {
            refused(&root, &error);
        }
        self.name_in(tgid, &executable_mappings(&maps), addresses)
    }

    fn name_in(
        &self,
        tgid: u32,
        mappings: &[Mapping],
        addresses: &[u64],
    ) -> HashMap<u64, UserFrame> {
        let mut named = HashMap::with_capacity(addresses.len());
        // File offsets per file, to name in one pass each.
        let mut by_file: HashMap<PathBuf, Vec<(u64, u64)>> = HashMap::new();
        for &address in addresses {
            let Some(mapping) = mapping_of(mappings, address) else {
                named.insert(address, UserFrame::Unknown);
                continue;
            };
            match &mapping.backing {
                Backing::Anonymous => {
                    named.insert(address, UserFrame::Anonymous);
                }
                Backing::Special(_) => {
                    named.insert(
                        address,
                        UserFrame::Object(mapping.object().unwrap_or_default()),
                    );
                }
                Backing::File {
                    path,
                    device,
                    inode,
                } => {
                    // Through the process's own root: the file its container sees, wherever
                    // the agent runs.
                    let file = self
                        .opened
                        .borrow_mut()
                        .entry((device.clone(), *inode))
                        .or_insert_with(|| PathBuf::from(format!("/proc/{tgid}/root{path}")))
                        .clone();
                    let offset = address - mapping.start + mapping.offset;
                    by_file.entry(file).or_default().push((address, offset));
                }
            }
        }
        for (file, wanted) in by_file {
            let mut elf = Elf::new(&file);
            elf.debug_syms = false;
            let offsets: Vec<u64> = wanted.iter().map(|(_, offset)| *offset).collect();
            let symbolized = self
                .symbolizer
                .symbolize(&Source::Elf(elf), Input::FileOffset(&offsets))
                .unwrap_or_default();
            for (index, (address, _)) in wanted.into_iter().enumerate() {
                let frame = match symbolized.get(index) {
                    Some(Symbolized::Sym(symbol)) => UserFrame::Function(symbol.name.to_string()),
                    _ => match mapping_of(mappings, address).and_then(Mapping::object) {
                        Some(object) => UserFrame::Object(object),
                        None => UserFrame::Unknown,
                    },
                };
                named.insert(address, frame);
            }
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
        let objects: Vec<Option<String>> = found.iter().map(Mapping::object).collect();
        let expected = [Some("nginx"), Some("libc.so.6"), None, Some("vdso")];
        assert_eq!(objects, expected.map(|o| o.map(String::from)));
        let nginx = mapping_of(&found, 0x55d0_c0a2_a000).unwrap();
        assert_eq!(nginx.offset, 0x2a000);
        assert_eq!(
            nginx.backing,
            Backing::File {
                path: "/usr/sbin/nginx".into(),
                device: "fe:01".into(),
                inode: 1049
            }
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
        let symbols = UserSymbols::default();
        let found = executable_mappings(MAPS);
        let named = symbols.name_in(0, &found, &[0x10, 0x7f1c_2b00_0100, 0x7ffd_3d7f_3010]);
        assert_eq!(named[&0x10], UserFrame::Unknown);
        assert_eq!(named[&0x7f1c_2b00_0100], UserFrame::Anonymous);
        assert_eq!(named[&0x7ffd_3d7f_3010], UserFrame::Object("vdso".into()));
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
        let symbols = UserSymbols::default();
        let named = symbols.name(std::process::id(), &[address + 1]);
        match &named[&(address + 1)] {
            UserFrame::Function(name) => {
                assert!(name.ends_with("a_function_of_this_test"), "named {name}")
            }
            other => panic!("not named from the test binary's symbols: {other:?}"),
        }
    }
}
