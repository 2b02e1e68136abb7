//! The file system calls on the Linux ABI: `openat` / `open`, `close`,
//! `read`, `write`, `readv`-less `writev`, `pread64`, `pwrite64`, `lseek`,
//! `fstat` / `newfstatat` / `stat` / `lstat`, `ftruncate`, `unlink` /
//! `unlinkat`, `fsync` / `fdatasync`, `getdents64`, `access`, `dup` /
//! `dup2` / `dup3`, `getcwd`. Paths are resolved from the root (the
//! current directory is always `/`) or, for the `*at` calls, from a
//! directory descriptor.

use alloc::sync::Arc;
use alloc::vec::Vec;

use pager::ext2::{FsError, Ino, ROOT_INO};

use crate::fs::{self, FileKind, OpenFile};
use crate::proc;
use crate::syscall::errno::*;
use crate::syscall::uaccess::{copy_from_user, copy_string, copy_to_user};

const O_ACCMODE: u64 = 3;
const O_WRONLY: u64 = 1;
const O_RDWR: u64 = 2;
const O_CREAT: u64 = 0o100;
const O_EXCL: u64 = 0o200;
const O_TRUNC: u64 = 0o1000;
const O_APPEND: u64 = 0o2000;
pub(super) const O_NONBLOCK: u64 = 0o4000;
const O_DIRECTORY: u64 = 0o200000;
pub(super) const O_CLOEXEC: u64 = 0o2000000;
const AT_FDCWD: i64 = -100;
const AT_REMOVEDIR: u64 = 0x200;
const AT_EMPTY_PATH: u64 = 0x1000;
const S_IFMT: u16 = 0o170000;
const S_IFDIR: u16 = 0o040000;
const S_IFREG: u16 = 0o100000;
const EISDIR: i64 = 21;
const ENOTDIR: i64 = 20;
const ENOENT_: i64 = ENOENT;

/// Bytes moved per filesystem call (the bounce buffer's size).
const CHUNK: usize = 16 * 1024;

fn fs_err(e: FsError) -> i64 {
    -(e.errno() as i64)
}

fn current() -> Result<Arc<proc::Process>, i64> {
    proc::current().ok_or(EINVAL)
}

fn file(fd: u64) -> Result<Arc<OpenFile>, i64> {
    current()?.file(fd).ok_or(EBADF)
}

fn mount() -> Result<&'static fs::Mount, i64> {
    fs::root().ok_or(ENOENT_)
}

/// The directory a `*at` call starts from, and the path.
fn start_dir(dirfd: i64, path: &[u8]) -> Result<Ino, i64> {
    if path.first() == Some(&b'/') || dirfd == AT_FDCWD {
        return Ok(ROOT_INO);
    }
    match file(dirfd as u64)?.kind {
        FileKind::Dir(ino) => Ok(ino),
        _ => Err(ENOTDIR),
    }
}

/// Splits `path` into its directory and last name ("a/b/c" → "a/b", "c").
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    let trimmed = {
        let mut p = path;
        while p.len() > 1 && p.last() == Some(&b'/') {
            p = &p[..p.len() - 1];
        }
        p
    };
    match trimmed.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/", &trimmed[1..]),
        Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
        None => (b".", trimmed),
    }
}

/// Reads from `text` at `off` into the user's `buf`; the count read.
fn text_read(text: &[u8], off: u64, buf: u64, count: u64) -> Result<u64, i64> {
    let from = text.len().min(off as usize);
    let n = (text.len() - from).min(count as usize);
    copy_to_user(buf, &text[from..from + n])?;
    Ok(n as u64)
}

/// `openat(dirfd, path, flags, mode)`.
pub fn openat(dirfd: i64, path: u64, flags: u64, mode: u64) -> i64 {
    let r = (|| -> Result<i64, i64> {
        let path = copy_string(path, 4095)?;
        if path.is_empty() {
            return Err(ENOENT_);
        }
        let acc = flags & O_ACCMODE;
        let (readable, writable) = (acc != O_WRONLY, acc == O_WRONLY || acc == O_RDWR);
        if let Some(opened) = fs::procfs::open(&path) {
            let opened = opened?;
            if writable && !matches!(opened, fs::procfs::Opened::Mem(_)) {
                return Err(EACCES);
            }
            let f = match opened {
                fs::procfs::Opened::Text(bytes) => OpenFile::text(bytes.into()),
                fs::procfs::Opened::Words(w) => OpenFile::words(w),
                fs::procfs::Opened::Mem(pid) => OpenFile::mem(pid, readable, writable),
            }
            .map_err(|e| -fs_err(e))?;
            f.nonblock.store(flags & O_NONBLOCK != 0, core::sync::atomic::Ordering::Relaxed);
            return current()?.add_file(f, flags & O_CLOEXEC != 0, 0).map(|fd| fd as i64).ok_or(EMFILE);
        }
        let m = mount()?;
        let start = start_dir(dirfd, &path)?;
        let ino = {
            let mut fs = m.fs.lock();
            let found = fs.lookup_at(start, &path);
            let ino = match found {
                Ok(_) if flags & O_CREAT != 0 && flags & O_EXCL != 0 => return Err(EEXIST),
                Ok(ino) => ino,
                Err(FsError::NotFound) if flags & O_CREAT != 0 => {
                    let (dir, name) = split(&path);
                    let dir = fs.lookup_at(start, dir).map_err(|e| -fs_err(e))?;
                    fs.create(dir, name, S_IFREG | (mode as u16 & 0o7777)).map_err(|e| -fs_err(e))?
                }
                Err(e) => return Err(-fs_err(e)),
            };
            let st = fs.stat(ino).map_err(|e| -fs_err(e))?;
            let is_dir = st.mode & S_IFMT == S_IFDIR;
            if is_dir && writable {
                return Err(EISDIR);
            }
            if !is_dir && flags & O_DIRECTORY != 0 {
                return Err(ENOTDIR);
            }
            (ino, is_dir, st.size)
        };
        let f = OpenFile::open(ino.0, ino.1, ino.2, readable, writable, flags & O_APPEND != 0).map_err(|e| -fs_err(e))?;
        if let Some(v) = f.vnode()
            && dirfd == AT_FDCWD
        {
            fs::name_vnode(v, &path);
        }
        if let (Some(v), true) = (f.vnode(), writable && flags & O_TRUNC != 0) {
            truncate(v, 0)?;
        }
        f.nonblock.store(flags & O_NONBLOCK != 0, core::sync::atomic::Ordering::Relaxed);
        current()?.add_file(f, flags & O_CLOEXEC != 0, 0).map(|fd| fd as i64).ok_or(EMFILE)
    })();
    r.unwrap_or_else(|e| -e)
}

/// `close(fd)`.
pub fn close(fd: u64) -> i64 {
    let Ok(p) = current() else { return -EINVAL };
    let closed = {
        let mut files = p.files.lock();
        match usize::try_from(fd).ok().and_then(|i| files.get_mut(i)) {
            Some(slot) => slot.take(),
            None => None,
        }
    };
    // The file itself closes (and an unlinked one is freed) outside the lock.
    match closed {
        Some(_) => 0,
        None => -EBADF,
    }
}

/// Truncates (or extends) the file of `v` to `len` bytes: its dirty pages
/// are written back first, and the pages from the one the old or the new
/// end falls in, whichever is lower, leave its object and every mapping.
/// When the file grows, the page of the old end goes too: bytes written
/// through a mapping past that end were never the file's (the write-back
/// stopped at the end), and they must not appear as its data now; the page
/// is read again from the file, zeros past the old end (FreeBSD zeroes that
/// part of the page in `vnode_pager_setsize`).
fn truncate(v: &fs::Vnode, len: u64) -> Result<(), i64> {
    v.flush(0, u64::MAX).map_err(|e| -fs_err(e))?;
    let old = v.size.load(core::sync::atomic::Ordering::Acquire);
    mount()?.fs.lock().truncate(v.ino, len).map_err(|e| -fs_err(e))?;
    v.set_size(len);
    v.invalidate(old.min(len) & !4095, u64::MAX);
    Ok(())
}

/// Reads from the file of `v` at `off` into user memory at `buf`: pages
/// written through a mapping are written back first.
fn file_read(v: &fs::Vnode, off: u64, buf: u64, count: u64) -> Result<u64, i64> {
    v.flush(off, off.saturating_add(count)).map_err(|e| -fs_err(e))?;
    let ino = v.ino;
    let m = mount()?;
    let mut kbuf = Vec::new();
    kbuf.try_reserve_exact(CHUNK).map_err(|_| ENOMEM)?;
    kbuf.resize(CHUNK, 0);
    let mut done = 0u64;
    while done < count {
        let n = ((count - done) as usize).min(CHUNK);
        let got = m.fs.lock().read(ino, off + done, &mut kbuf[..n]).map_err(|e| -fs_err(e))?;
        if got == 0 {
            break;
        }
        if let Err(e) = copy_to_user(buf + done, &kbuf[..got]) {
            return if done > 0 { Ok(done) } else { Err(e) };
        }
        done += got as u64;
        if got < n {
            break;
        }
    }
    Ok(done)
}

/// Writes user memory at `buf` to the file of `v` at `off`; the resident
/// pages of the range are written back before and dropped after, so every
/// mapping sees the new data.
fn file_write(v: &fs::Vnode, off: u64, buf: u64, count: u64) -> Result<u64, i64> {
    let end = off.saturating_add(count);
    v.flush(off, end).map_err(|e| -fs_err(e))?;
    let r = file_write_through(v.ino, off, buf, count);
    if let Ok(n) = r {
        let size = v.size.load(core::sync::atomic::Ordering::Acquire);
        v.set_size(size.max(off + n));
    }
    v.invalidate(off, end);
    r
}

fn file_write_through(ino: Ino, off: u64, buf: u64, count: u64) -> Result<u64, i64> {
    let m = mount()?;
    let mut kbuf = Vec::new();
    kbuf.try_reserve_exact(CHUNK).map_err(|_| ENOMEM)?;
    kbuf.resize(CHUNK, 0);
    let mut done = 0u64;
    while done < count {
        let n = ((count - done) as usize).min(CHUNK);
        if let Err(e) = copy_from_user(&mut kbuf[..n], buf + done) {
            return if done > 0 { Ok(done) } else { Err(e) };
        }
        match m.fs.lock().write(ino, off + done, &kbuf[..n]) {
            Ok(w) => done += w as u64,
            Err(e) if done > 0 => {
                log::warn!("write of inode {ino} stopped at {done} bytes: {e:?}");
                break;
            }
            Err(e) => return Err(-fs_err(e)),
        }
    }
    Ok(done)
}

/// `read(fd, buf, count)`.
pub fn read(fd: u64, buf: u64, count: u64) -> i64 {
    read_write(fd, buf, count, false)
}

/// `write(fd, buf, count)`.
pub fn write(fd: u64, buf: u64, count: u64) -> i64 {
    read_write(fd, buf, count, true)
}

/// `read` or `write` at the file's offset, which moves past what was done
/// (a write with O_APPEND starts at the end).
fn read_write(fd: u64, buf: u64, count: u64, writing: bool) -> i64 {
    let r = (|| -> Result<i64, i64> {
        let f = file(fd)?;
        if !(if writing { f.writable } else { f.readable }) {
            return Err(EBADF);
        }
        match &f.kind {
            FileKind::Console if writing => Ok(crate::fs::console::write(buf, count)),
            FileKind::Console => Ok(crate::fs::console::read(buf, count)),
            FileKind::Dir(_) => Err(EISDIR),
            FileKind::Pid(_) => Err(EINVAL),
            FileKind::Pipe(end) => {
                let nonblock = f.nonblock.load(core::sync::atomic::Ordering::Relaxed);
                let n = if writing { end.pipe.write(buf, count, nonblock)? } else { end.pipe.read(buf, count, nonblock)? };
                Ok(n as i64)
            }
            FileKind::Text(t) => {
                let mut off = f.offset.lock();
                let n = text_read(t, *off, buf, count)?;
                *off += n;
                Ok(n as i64)
            }
            FileKind::Words(w) => {
                let mut off = f.offset.lock();
                let n = w.read(*off, buf, count)?;
                *off += n;
                Ok(n as i64)
            }
            FileKind::Mem(pid) => {
                let mut off = f.offset.lock();
                let n = fs::procfs::mem::access(*pid, *off, buf, count, writing)?;
                *off += n;
                Ok(n as i64)
            }
            FileKind::File(v) => {
                let mut off = f.offset.lock();
                let n = if writing {
                    if f.append {
                        *off = v.size.load(core::sync::atomic::Ordering::Acquire);
                    }
                    file_write(v, *off, buf, count)?
                } else {
                    file_read(v, *off, buf, count)?
                };
                *off += n;
                Ok(n as i64)
            }
        }
    })();
    r.unwrap_or_else(|e| -e)
}

/// `pread64(fd, buf, count, offset)` and `pwrite64`.
pub fn pread_pwrite(fd: u64, buf: u64, count: u64, offset: u64, writing: bool) -> i64 {
    let r = (|| -> Result<i64, i64> {
        let f = file(fd)?;
        if (offset as i64) < 0 {
            return Err(EINVAL);
        }
        match &f.kind {
            FileKind::Console | FileKind::Pipe(_) => Err(ESPIPE),
            FileKind::Pid(_) => Err(EINVAL),
            FileKind::Dir(_) => Err(EISDIR),
            FileKind::Text(_) | FileKind::Words(_) if writing => Err(EBADF),
            FileKind::Text(t) => Ok(text_read(t, offset, buf, count)? as i64),
            FileKind::Words(w) => Ok(w.read(offset, buf, count)? as i64),
            FileKind::Mem(pid) => {
                if !(if writing { f.writable } else { f.readable }) {
                    return Err(EBADF);
                }
                Ok(fs::procfs::mem::access(*pid, offset, buf, count, writing)? as i64)
            }
            FileKind::File(v) => {
                if writing {
                    if !f.writable {
                        return Err(EBADF);
                    }
                    Ok(file_write(v, offset, buf, count)? as i64)
                } else {
                    if !f.readable {
                        return Err(EBADF);
                    }
                    Ok(file_read(v, offset, buf, count)? as i64)
                }
            }
        }
    })();
    r.unwrap_or_else(|e| -e)
}

/// `lseek(fd, offset, whence)`.
pub fn lseek(fd: u64, offset: i64, whence: u64) -> i64 {
    const SEEK_SET: u64 = 0;
    const SEEK_CUR: u64 = 1;
    const SEEK_END: u64 = 2;
    let r = (|| -> Result<i64, i64> {
        let f = file(fd)?;
        // The end of what seeks from the end: a file's size, a /proc
        // text's length; a pagemap has none (as on Linux).
        let end = || -> Result<i64, i64> {
            match &f.kind {
                FileKind::Console | FileKind::Pipe(_) => Err(ESPIPE),
                FileKind::Text(t) => Ok(t.len() as i64),
                FileKind::Words(_) | FileKind::Mem(_) | FileKind::Pid(_) => Err(EINVAL),
                FileKind::File(v) => Ok(v.size.load(core::sync::atomic::Ordering::Acquire) as i64),
                FileKind::Dir(i) => Ok(mount()?.fs.lock().stat(*i).map_err(|e| -fs_err(e))?.size as i64),
            }
        };
        if matches!(f.kind, FileKind::Console | FileKind::Pipe(_)) {
            return Err(ESPIPE);
        }
        let mut off = f.offset.lock();
        let base = match whence {
            SEEK_SET => 0,
            SEEK_CUR => *off as i64,
            SEEK_END => end()?,
            _ => return Err(EINVAL),
        };
        let new = base.checked_add(offset).filter(|n| *n >= 0).ok_or(EINVAL)?;
        *off = new as u64;
        Ok(new)
    })();
    r.unwrap_or_else(|e| -e)
}

/// What a `struct stat` describes.
enum StatOf {
    Console,
    /// A pipe: a FIFO, of no size.
    Pipe,
    /// A /proc file: read-only, of no size until read (as on Linux).
    Proc,
    Inode(Ino),
}

/// Writes a Linux x86_64 `struct stat` (144 bytes) for `of` to `buf`.
fn put_stat(of: StatOf, buf: u64) -> Result<(), i64> {
    let mut b = [0u8; 144];
    let mut put = |off: usize, v: u64, len: usize| b[off..off + len].copy_from_slice(&v.to_le_bytes()[..len]);
    match of {
        StatOf::Proc => {
            put(0, 0x16, 8); // st_dev: procfs's, an anonymous device
            put(16, 1, 8); // st_nlink
            put(24, 0o100444, 4); // st_mode
            put(56, 1024, 8); // st_blksize
        }
        StatOf::Pipe => {
            put(0, 0xc, 8); // st_dev: pipefs's, an anonymous device
            put(16, 1, 8); // st_nlink
            put(24, 0o010600, 4); // st_mode: S_IFIFO, rw for the owner
            put(56, 4096, 8); // st_blksize
        }
        StatOf::Console => {
            // A character device: the console (major 5, minor 1).
            put(0, 5, 8); // st_dev
            put(16, 1, 8); // st_nlink
            put(24, 0o020620, 4); // st_mode
            put(40, (5 << 8) | 1, 8); // st_rdev
            put(56, 4096, 8); // st_blksize
        }
        StatOf::Inode(ino) => {
            let st = mount()?.fs.lock().stat(ino).map_err(|e| -fs_err(e))?;
            put(0, 0x801, 8); // st_dev: the one disk
            put(8, st.ino as u64, 8);
            put(16, st.nlink as u64, 8);
            put(24, st.mode as u64, 4);
            put(28, st.uid as u64, 4);
            put(32, st.gid as u64, 4);
            put(48, st.size, 8);
            put(56, st.blksize as u64, 8);
            put(64, st.blocks, 8);
            put(72, st.atime as u64, 8);
            put(88, st.mtime as u64, 8);
            put(104, st.ctime as u64, 8);
        }
    }
    copy_to_user(buf, &b)
}

/// `fstat(fd, statbuf)`.
pub fn fstat(fd: u64, buf: u64) -> i64 {
    let r = (|| -> Result<i64, i64> {
        let f = file(fd)?;
        let of = match &f.kind {
            FileKind::Console => StatOf::Console,
            FileKind::Pipe(_) => StatOf::Pipe,
            FileKind::Pid(_) => StatOf::Proc,
            FileKind::Text(_) | FileKind::Words(_) | FileKind::Mem(_) => StatOf::Proc,
            FileKind::File(v) => StatOf::Inode(v.ino),
            FileKind::Dir(i) => StatOf::Inode(*i),
        };
        put_stat(of, buf)?;
        Ok(0)
    })();
    r.unwrap_or_else(|e| -e)
}

/// `newfstatat(dirfd, path, statbuf, flags)` (and `stat`, `lstat`).
pub fn newfstatat(dirfd: i64, path: u64, buf: u64, flags: u64) -> i64 {
    let r = (|| -> Result<i64, i64> {
        let path = copy_string(path, 4095)?;
        if path.is_empty() {
            if flags & AT_EMPTY_PATH != 0 {
                return Ok(fstat(dirfd as u64, buf));
            }
            return Err(ENOENT_);
        }
        if let Some(opened) = fs::procfs::open(&path) {
            opened?;
            put_stat(StatOf::Proc, buf)?;
            return Ok(0);
        }
        let start = start_dir(dirfd, &path)?;
        let ino = mount()?.fs.lock().lookup_at(start, &path).map_err(|e| -fs_err(e))?;
        put_stat(StatOf::Inode(ino), buf)?;
        Ok(0)
    })();
    r.unwrap_or_else(|e| -e)
}

/// `access(path, mode)` / `faccessat`: everyone is root, so existence.
pub fn faccessat(dirfd: i64, path: u64, mode: u64) -> i64 {
    let r = (|| -> Result<i64, i64> {
        if mode & !7 != 0 {
            return Err(EINVAL);
        }
        let path = copy_string(path, 4095)?;
        let start = start_dir(dirfd, &path)?;
        mount()?.fs.lock().lookup_at(start, &path).map_err(|e| -fs_err(e))?;
        Ok(0)
    })();
    r.unwrap_or_else(|e| -e)
}

/// `ftruncate(fd, length)`.
pub fn ftruncate(fd: u64, len: i64) -> i64 {
    let r = (|| -> Result<i64, i64> {
        let f = file(fd)?;
        if len < 0 {
            return Err(EINVAL);
        }
        match &f.kind {
            FileKind::File(v) if f.writable => {
                truncate(v, len as u64)?;
                Ok(0)
            }
            FileKind::Dir(_) => Err(EISDIR),
            _ => Err(EINVAL),
        }
    })();
    r.unwrap_or_else(|e| -e)
}

/// `unlinkat(dirfd, path, flags)` (and `unlink`). Directories cannot be
/// removed yet.
pub fn unlinkat(dirfd: i64, path: u64, flags: u64) -> i64 {
    let r = (|| -> Result<i64, i64> {
        if flags & !AT_REMOVEDIR != 0 {
            return Err(EINVAL);
        }
        let path = copy_string(path, 4095)?;
        let m = mount()?;
        let start = start_dir(dirfd, &path)?;
        let (dir, name) = split(&path);
        let dir = {
            let mut fs = m.fs.lock();
            let dir = fs.lookup_at(start, dir).map_err(|e| -fs_err(e))?;
            let target = fs.lookup_in(dir, name).map_err(|e| -fs_err(e))?;
            let is_dir = fs.stat(target).map_err(|e| -fs_err(e))?.mode & S_IFMT == S_IFDIR;
            if is_dir && flags & AT_REMOVEDIR == 0 {
                return Err(EISDIR);
            }
            if is_dir || flags & AT_REMOVEDIR != 0 {
                return Err(if is_dir { EPERM } else { ENOTDIR });
            }
            dir
        };
        m.unlink(dir, name).map_err(|e| -fs_err(e))?;
        Ok(0)
    })();
    r.unwrap_or_else(|e| -e)
}

/// `fsync(fd)` / `fdatasync(fd)`: pages written through mappings, then the
/// filesystem's metadata, reach the disk.
pub fn fsync(fd: u64) -> i64 {
    let r = (|| -> Result<i64, i64> {
        let f = file(fd)?;
        if let Some(v) = f.vnode() {
            v.flush(0, u64::MAX).map_err(|e| -fs_err(e))?;
        }
        match f.ino() {
            Some(ino) => mount()?.fs.lock().fsync(ino).map_err(|e| -fs_err(e))?,
            None => return Err(EINVAL),
        }
        Ok(0)
    })();
    r.unwrap_or_else(|e| -e)
}

/// `getdents64(fd, dirp, count)`: `struct linux_dirent64` records.
pub fn getdents64(fd: u64, dirp: u64, count: u64) -> i64 {
    let r = (|| -> Result<i64, i64> {
        let f = file(fd)?;
        let &FileKind::Dir(ino) = &f.kind else { return Err(ENOTDIR) };
        let m = mount()?;
        let mut off = f.offset.lock();
        let mut out: Vec<u8> = Vec::new();
        loop {
            let entries = m.fs.lock().readdir(ino, *off).map_err(|e| -fs_err(e))?;
            if entries.is_empty() {
                break;
            }
            let mut full = false;
            for e in entries {
                let reclen = (19 + e.name.len() + 1).next_multiple_of(8);
                if (out.len() + reclen) as u64 > count {
                    full = true;
                    break;
                }
                let start = out.len();
                out.extend_from_slice(&(e.ino as u64).to_le_bytes());
                out.extend_from_slice(&e.next.to_le_bytes());
                out.extend_from_slice(&(reclen as u16).to_le_bytes());
                out.push(e.file_type);
                out.extend_from_slice(&e.name);
                out.resize(start + reclen, 0);
                *off = e.next;
            }
            if full {
                break;
            }
        }
        if out.is_empty() && count > 0 {
            // Nothing fitted but there were entries left: the buffer is too small.
            let more = !m.fs.lock().readdir(ino, *off).map_err(|e| -fs_err(e))?.is_empty();
            if more {
                return Err(EINVAL);
            }
        }
        copy_to_user(dirp, &out)?;
        Ok(out.len() as i64)
    })();
    r.unwrap_or_else(|e| -e)
}

/// `dup(fd)`, `dup2(old, new)` and `dup3(old, new, flags)`.
pub fn dup(old: u64, new: Option<u64>, flags: u64) -> i64 {
    let r = (|| -> Result<i64, i64> {
        let p = current()?;
        let f = p.file(old).ok_or(EBADF)?;
        let cloexec = flags & O_CLOEXEC != 0;
        if flags & !O_CLOEXEC != 0 {
            return Err(EINVAL);
        }
        match new {
            None => p.add_file(f, false, 0).map(|fd| fd as i64).ok_or(EMFILE),
            Some(n) if n == old => Ok(n as i64),
            Some(n) => {
                // A descriptor at or past RLIMIT_NOFILE is EBADF (Linux).
                let max = p.limit(crate::proc::RLIMIT_NOFILE).min(crate::proc::NR_OPEN);
                let n = usize::try_from(n).ok().filter(|n| (*n as u64) < max).ok_or(EBADF)?;
                let replaced = {
                    let mut files = p.files.lock();
                    if n >= files.len() {
                        let more = n + 1 - files.len();
                        files.try_reserve(more).map_err(|_| EMFILE)?;
                        files.resize(n + 1, None);
                    }
                    files[n].replace((f, cloexec))
                };
                drop(replaced);
                Ok(n as i64)
            }
        }
    })();
    r.unwrap_or_else(|e| -e)
}

/// `getcwd(buf, size)`: always the root.
pub fn getcwd(buf: u64, size: u64) -> i64 {
    if size < 2 {
        return -ERANGE;
    }
    match copy_to_user(buf, b"/\0") {
        Ok(()) => 2,
        Err(e) => -e,
    }
}

const ERANGE: i64 = 34;

/// `writev(fd, iov, iovcnt)`: each `struct iovec { base, len }` in turn.
pub fn writev(fd: u64, iov: u64, count: u64) -> i64 {
    if count > 1024 {
        return -EINVAL;
    }
    let mut total = 0i64;
    for i in 0..count {
        let mut raw = [0u8; 16];
        if let Err(e) = copy_from_user(&mut raw, iov.wrapping_add(i * 16)) {
            return if total > 0 { total } else { -e };
        }
        let base = u64::from_le_bytes(raw[..8].try_into().unwrap_or_default());
        let len = u64::from_le_bytes(raw[8..].try_into().unwrap_or_default());
        if len > i64::MAX as u64 {
            return if total > 0 { total } else { -EINVAL };
        }
        let r = write(fd, base, len);
        if r < 0 {
            return if total > 0 { total } else { r };
        }
        total += r;
        if (r as u64) < len {
            break;
        }
    }
    total
}
