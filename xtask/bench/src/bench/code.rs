//! What the kernel made of a loaded program: the verifier's count of the
//! instructions it processed, and the calls of the translated ("xlated")
//! program, named from /proc/kallsyms. Map lookups the verifier inlines
//! (arrays, per-CPU arrays) are no call there; hash lookups become a call
//! of the map's lookup function, helpers a call of the helper's function.

use std::collections::BTreeMap;
use std::os::fd::{AsFd as _, AsRawFd as _};

use anyhow::{Context as _, Result, anyhow, ensure};
use aya::programs::Xdp;

/// A loaded program's code, as the kernel holds it.
#[derive(Clone, Debug, Default)]
pub struct Code {
    /// Instructions the verifier processed (all paths, with its pruning).
    pub verified: u32,
    /// Instructions of the translated program.
    pub xlated: usize,
    /// Call sites by the kernel function they call (tail calls as
    /// `bpf_tail_call`).
    pub calls: BTreeMap<String, usize>,
}

const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_JMP_CALL: u8 = 0x85;
/// `BPF_FUNC_tail_call`: how a dump shows a tail call.
const FUNC_TAIL_CALL: i32 = 12;

/// `prog`'s verifier count and its calls (needs root: the kernel hides
/// call targets from others).
pub fn inspect(prog: &Xdp) -> Result<Code> {
    let info = prog.info().context("reading the program's info")?;
    let verified = info
        .verified_instruction_count()
        .ok_or_else(|| anyhow!("the kernel reports no verifier count"))?;
    let len = info
        .size_translated()
        .ok_or_else(|| anyhow!("the kernel reports no translated program"))?;
    let insns = xlated(prog, len)?;
    let base = kallsyms_address("__bpf_call_base")?;
    let names = kallsyms()?;
    let mut calls = BTreeMap::new();
    for insn in insns.chunks_exact(8) {
        // code, dst:src registers, offset, immediate.
        let src_reg = insn[1] >> 4;
        if insn[0] != BPF_JMP_CALL || src_reg != 0 {
            continue;
        }
        let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
        let name = if imm == FUNC_TAIL_CALL {
            "bpf_tail_call".to_owned()
        } else {
            let at = base.wrapping_add_signed(i64::from(imm));
            names
                .get(&at)
                .cloned()
                .unwrap_or_else(|| format!("{at:#x}"))
        };
        *calls.entry(name).or_insert(0) += 1;
    }
    Ok(Code {
        verified,
        xlated: insns.len() / 8,
        calls,
    })
}

/// The translated instructions (`len` bytes), by `BPF_OBJ_GET_INFO_BY_FD`.
fn xlated(prog: &Xdp, len: u32) -> Result<Vec<u8>> {
    let fd = prog.fd().context("the program's fd")?;
    let mut insns = vec![0u8; len as usize];
    // struct bpf_prog_info up to xlated_prog_insns: type, id, tag[8],
    // jited_prog_len, xlated_prog_len, jited_prog_insns, xlated_prog_insns.
    let mut info = [0u8; 40];
    info[20..24].copy_from_slice(&len.to_ne_bytes());
    info[32..40].copy_from_slice(&(insns.as_mut_ptr() as u64).to_ne_bytes());
    // union bpf_attr for the command: bpf_fd, info_len, info.
    let mut attr = [0u8; 16];
    attr[0..4].copy_from_slice(&(fd.as_fd().as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(info.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(info.as_mut_ptr() as u64).to_ne_bytes());
    // SAFETY: `attr` is a valid bpf_attr for BPF_OBJ_GET_INFO_BY_FD, of the
    // size passed; it points to `info` (40 bytes, the size it states),
    // which points to `insns`, `len` bytes, the size it states. The kernel
    // writes only within those.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    ensure!(
        rc == 0,
        "BPF_OBJ_GET_INFO_BY_FD: {}",
        std::io::Error::last_os_error()
    );
    Ok(insns)
}

fn kallsyms() -> Result<BTreeMap<u64, String>> {
    let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(addr), Some(_kind), Some(name)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if let Ok(a) = u64::from_str_radix(addr, 16) {
            out.entry(a).or_insert_with(|| name.to_owned());
        }
    }
    Ok(out)
}

fn kallsyms_address(symbol: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
    let addr = text
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let addr = f.next()?;
            f.next()?;
            (f.next()? == symbol).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .ok_or_else(|| anyhow!("{symbol} not in /proc/kallsyms"))?;
    ensure!(addr != 0, "/proc/kallsyms hides addresses (not root?)");
    Ok(addr)
}
