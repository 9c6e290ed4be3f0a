//! The `newc` cpio format, the one the kernel unpacks as an initramfs.

use std::io::{self, Write};

/// What an archive entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Directory,
    File,
}

impl Kind {
    fn type_bits(self) -> u32 {
        match self {
            Kind::Directory => 0o040000,
            Kind::File => 0o100000,
        }
    }
}

/// Writes entries one after another; `finish` writes the trailer the kernel looks for.
pub struct Writer<W: Write> {
    out: W,
    next_inode: u32,
    written: u64,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            next_inode: 1,
            written: 0,
        }
    }

    /// Writes one entry: `name` without a leading `/`, `data` of exactly `size` bytes (a
    /// symlink's data is its target).
    pub fn entry(
        &mut self,
        name: &str,
        kind: Kind,
        permissions: u32,
        size: u64,
        data: &mut dyn io::Read,
    ) -> io::Result<()> {
        let size32 = u32::try_from(size).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}: {size} bytes is more than a cpio entry holds"),
            )
        })?;
        let nlink = if kind == Kind::Directory { 2 } else { 1 };
        let inode = self.next_inode;
        self.next_inode += 1;
        self.header(
            name,
            inode,
            kind.type_bits() | (permissions & 0o7777),
            nlink,
            size32,
        )?;
        let copied = io::copy(&mut io::Read::take(data, size), &mut self.out)?;
        if copied != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: expected {size} bytes, read {copied}"),
            ));
        }
        self.written += copied;
        self.pad()
    }

    /// Writes the trailer and returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.header("TRAILER!!!", 0, 0, 1, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn header(
        &mut self,
        name: &str,
        inode: u32,
        mode: u32,
        nlink: u32,
        size: u32,
    ) -> io::Result<()> {
        let name_size = name.len() + 1;
        let fields = [
            inode,
            mode,
            0,
            0,
            nlink,
            0,
            size,
            0,
            0,
            0,
            0,
            name_size as u32,
            0,
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for field in fields {
            header.push_str(&format!("{field:08X}"));
        }
        self.out.write_all(header.as_bytes())?;
        self.out.write_all(name.as_bytes())?;
        self.out.write_all(&[0])?;
        self.written += (header.len() + name_size) as u64;
        self.pad()
    }

    fn pad(&mut self) -> io::Result<()> {
        let padding = (4 - (self.written % 4)) % 4;
        self.out.write_all(&[0; 3][..padding as usize])?;
        self.written += padding;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_aligned_and_end_with_the_trailer() {
        let mut writer = Writer::new(Vec::new());
        writer
            .entry("bin", Kind::Directory, 0o755, 0, &mut io::empty())
            .unwrap();
        writer
            .entry("bin/hi", Kind::File, 0o755, 5, &mut &b"hello"[..])
            .unwrap();
        let archive = writer.finish().unwrap();
        assert_eq!(archive.len() % 4, 0);
        // Header of "bin/hi": regular file 0755, 5 bytes, name of 7 bytes with its NUL.
        let text = String::from_utf8_lossy(&archive);
        assert!(text.starts_with("070701"));
        assert!(text.contains("000081ED"), "mode 0100755");
        assert!(text.contains("bin/hi\0"));
        assert!(text.contains("hello"));
        assert!(text.contains("TRAILER!!!\0"));
        // Every header starts on a 4-byte boundary.
        let starts: Vec<usize> = text.match_indices("070701").map(|(i, _)| i).collect();
        assert_eq!(starts.len(), 3);
        assert!(starts.iter().all(|i| i % 4 == 0), "{starts:?}");
    }

    #[test]
    fn a_short_source_is_an_error_not_a_corrupt_archive() {
        let mut writer = Writer::new(Vec::new());
        let error = writer
            .entry("f", Kind::File, 0o644, 10, &mut &b"abc"[..])
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
