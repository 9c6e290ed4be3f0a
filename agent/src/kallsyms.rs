//! The kernel's symbols from `/proc/kallsyms`: functions name call paths (lock contention's and
//! the CPU profile's), data symbols name static locks.

use std::path::Path;

/// `/proc/kallsyms` lines as (address, kind, name), the address as printed (all zeros when
/// the reader may not see addresses). The well-formed entries of a kallsyms listing; other lines are skipped.
pub fn entries(kallsyms: &str) -> impl Iterator<Item = (&str, &str, &str)> {
    kallsyms.lines().filter_map(|line| {
        let mut fields = line.split_whitespace();
        Some((fields.next()?, fields.next()?, fields.next()?))
    })
}

/// Kernel symbols by address: data symbols name static locks, functions name call paths.
#[derive(Debug, Default)]
pub struct KernelSymbols {
    data: Vec<(u64, String)>,
    functions: Vec<(u64, String)>,
    /// Both functions every epoll system call goes through are there to probe (not inlined).
    epoll_functions: bool,
}

impl KernelSymbols {
    /// Reads a `kallsyms` file; no symbols when it cannot be read.
    pub fn read(kallsyms: &Path) -> Self {
        std::fs::read_to_string(kallsyms)
            .map(|text| Self::parse(&text))
            .unwrap_or_default()
    }

    pub fn parse(kallsyms: &str) -> Self {
        let (mut data, mut functions) = (Vec::new(), Vec::new());
        let (mut ctl, mut wait) = (false, false);
        for (address, kind, name) in entries(kallsyms) {
            let Some(address) = u64::from_str_radix(address, 16).ok().filter(|&a| a != 0) else {
                continue;
            };
            match kind {
                "t" | "T" | "w" | "W" => {
                    ctl |= name == "do_epoll_ctl";
                    wait |= name == "do_epoll_wait";
                    functions.push((address, name.to_string()));
                }
                "d" | "D" | "b" | "B" => data.push((address, name.to_string())),
                _ => {}
            }
        }
        data.sort();
        functions.sort();
        Self {
            data,
            functions,
            epoll_functions: ctl && wait,
        }
    }

    pub(crate) fn has_epoll_functions(&self) -> bool {
        self.epoll_functions
    }

    /// The address of a data symbol, such as `epmutex`.
    pub(crate) fn address_of(&self, symbol: &str) -> Option<u64> {
        self.data
            .iter()
            .find(|(_, name)| name == symbol)
            .map(|(address, _)| *address)
    }

    /// The symbol a lock address lies in: exact, or within the first 256 bytes of a symbol
    /// (a lock embedded in a static structure).
    pub fn resolve(&self, address: u64) -> Option<String> {
        let index = self
            .data
            .partition_point(|(a, _)| *a <= address)
            .checked_sub(1)?;
        let (start, name) = &self.data[index];
        match address - start {
            0 => Some(name.clone()),
            offset if offset < 256 => Some(format!("{name}+{offset:#x}")),
            _ => None,
        }
    }

    /// Whether the kernel has a function of this name (one that kprobes can find).
    pub(crate) fn has_function(&self, name: &str) -> bool {
        self.functions.iter().any(|(_, function)| function == name)
    }

    /// The function a return address lies in (the nearest symbol at or below it).
    pub(crate) fn function_at(&self, address: u64) -> Option<&str> {
        let index = self
            .functions
            .partition_point(|(a, _)| *a <= address)
            .checked_sub(1)?;
        Some(self.functions[index].1.as_str())
    }
}
