//! The default seccomp filter, in the spirit of docker's profile: the system calls docker's
//! default profile refuses to a container without extra capabilities fail with `EPERM`
//! (module loading, mounting, namespaces, keyrings, kexec, BPF, perf, clocks, swap, …);
//! `clone` that would make namespaces fails too, and `clone3` fails with `ENOSYS` so that
//! libc falls back to `clone`, whose flags a filter can see. Everything else is allowed, so
//! new harmless system calls keep working; the x32 ABI, whose numbers would slip past the
//! list, is refused as a whole, and other architectures are killed (seccompiler's check).
//!
//! Most of these calls also need a capability the container lacks; the filter is the
//! second fence, against kernel bugs in their permission checks. A container given such a
//! capability (`--cap-add`) gets the calls it grants back, as docker's profile allows them
//! ([`GRANTED_BY`]); the rest (keyrings, kexec, swap, userfaultfd, io_uring, …) stay refused.

use std::collections::BTreeMap;

use caps::Capability;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, sock_filter,
};

use crate::error::{Error, Result};

/// `open_tree_attr` (Linux 6.15), the same number on every architecture; libc lacks it.
const SYS_OPEN_TREE_ATTR: i64 = 467;

/// System calls refused outright.
const REFUSED: &[i64] = &[
    libc::SYS_acct,
    libc::SYS_add_key,
    libc::SYS_bpf,
    libc::SYS_clock_adjtime,
    libc::SYS_clock_settime,
    libc::SYS_delete_module,
    libc::SYS_fanotify_init,
    libc::SYS_finit_module,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fsopen,
    libc::SYS_fspick,
    libc::SYS_get_mempolicy,
    libc::SYS_init_module,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_io_uring_setup,
    libc::SYS_kcmp,
    libc::SYS_kexec_file_load,
    libc::SYS_kexec_load,
    libc::SYS_keyctl,
    libc::SYS_lookup_dcookie,
    libc::SYS_mbind,
    libc::SYS_mount,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_move_pages,
    libc::SYS_name_to_handle_at,
    libc::SYS_nfsservctl,
    libc::SYS_open_by_handle_at,
    libc::SYS_open_tree,
    SYS_OPEN_TREE_ATTR,
    libc::SYS_perf_event_open,
    libc::SYS_pidfd_getfd,
    libc::SYS_pivot_root,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_reboot,
    libc::SYS_request_key,
    libc::SYS_set_mempolicy,
    libc::SYS_set_mempolicy_home_node,
    libc::SYS_setns,
    libc::SYS_settimeofday,
    libc::SYS_swapoff,
    libc::SYS_swapon,
    libc::SYS_syslog,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_userfaultfd,
    libc::SYS_vhangup,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_sysfs,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ustat,
];

/// The refused calls a capability gives back, after docker's default profile (its
/// `includes.caps` sections); `clone` with namespace flags comes back with CAP_SYS_ADMIN.
const GRANTED_BY: &[(Capability, &[i64])] = &[
    (
        Capability::CAP_SYS_ADMIN,
        &[
            libc::SYS_bpf,
            libc::SYS_fanotify_init,
            libc::SYS_fsconfig,
            libc::SYS_fsmount,
            libc::SYS_fsopen,
            libc::SYS_fspick,
            libc::SYS_lookup_dcookie,
            libc::SYS_mount,
            libc::SYS_mount_setattr,
            libc::SYS_move_mount,
            libc::SYS_name_to_handle_at,
            libc::SYS_open_tree,
            SYS_OPEN_TREE_ATTR,
            libc::SYS_perf_event_open,
            libc::SYS_pivot_root,
            libc::SYS_quotactl,
            libc::SYS_quotactl_fd,
            libc::SYS_setns,
            libc::SYS_syslog,
            libc::SYS_umount2,
            libc::SYS_unshare,
        ],
    ),
    (Capability::CAP_SYS_BOOT, &[libc::SYS_reboot]),
    (
        Capability::CAP_SYS_MODULE,
        &[
            libc::SYS_delete_module,
            libc::SYS_finit_module,
            libc::SYS_init_module,
        ],
    ),
    (Capability::CAP_SYS_PACCT, &[libc::SYS_acct]),
    (
        Capability::CAP_SYS_PTRACE,
        &[
            libc::SYS_kcmp,
            libc::SYS_pidfd_getfd,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
        ],
    ),
    #[cfg(target_arch = "x86_64")]
    (
        Capability::CAP_SYS_RAWIO,
        &[libc::SYS_ioperm, libc::SYS_iopl],
    ),
    (
        Capability::CAP_SYS_TIME,
        &[
            libc::SYS_clock_adjtime,
            libc::SYS_clock_settime,
            libc::SYS_settimeofday,
        ],
    ),
    (Capability::CAP_SYS_TTY_CONFIG, &[libc::SYS_vhangup]),
    (
        Capability::CAP_SYS_NICE,
        &[
            libc::SYS_get_mempolicy,
            libc::SYS_mbind,
            libc::SYS_move_pages,
            libc::SYS_set_mempolicy,
            libc::SYS_set_mempolicy_home_node,
        ],
    ),
    (Capability::CAP_SYSLOG, &[libc::SYS_syslog]),
    (Capability::CAP_BPF, &[libc::SYS_bpf]),
    (Capability::CAP_PERFMON, &[libc::SYS_perf_event_open]),
    (
        Capability::CAP_DAC_READ_SEARCH,
        &[libc::SYS_open_by_handle_at],
    ),
];

/// `clone` flags that make namespaces.
const NAMESPACE_FLAGS: &[i32] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

/// `personality` values docker allows: Linux, 32-bit Linux, UNAME26, both, and the query.
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// The architecture seccomp reports for native system calls.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_00b7;
#[cfg(target_arch = "riscv64")]
const AUDIT_ARCH_NATIVE: u32 = 0xc000_00f3;

/// The bit that marks x32 system call numbers on x86_64.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The filter for a container with capabilities `caps`, as the BPF programs to install, in
/// order.
pub(crate) fn default_filters(caps: &[Capability]) -> Result<Vec<BpfProgram>> {
    let cond = |arg, op, value| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(filter_err)
    };
    let rule = |conds: Vec<SeccompCondition>| SeccompRule::new(conds).map_err(filter_err);

    let granted: Vec<i64> = GRANTED_BY
        .iter()
        .filter(|(cap, _)| caps.contains(cap))
        .flat_map(|(_, calls)| calls.iter().copied())
        .collect();
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = REFUSED
        .iter()
        .filter(|nr| !granted.contains(nr))
        .map(|&nr| (nr, Vec::new()))
        .collect();
    if !caps.contains(&Capability::CAP_SYS_ADMIN) {
        let clone_rules = NAMESPACE_FLAGS
            .iter()
            .map(|&flag| {
                let flag = flag as u64;
                // clone's flags are its first argument on every architecture strata runs on.
                rule(vec![cond(0, SeccompCmpOp::MaskedEq(flag), flag)?])
            })
            .collect::<Result<Vec<_>>>()?;
        rules.insert(libc::SYS_clone, clone_rules);
    }
    let odd_personality = PERSONALITIES
        .iter()
        .map(|&p| cond(0, SeccompCmpOp::Ne, p))
        .collect::<Result<Vec<_>>>()?;
    rules.insert(libc::SYS_personality, vec![rule(odd_personality)?]);
    rules.insert(
        libc::SYS_socket,
        vec![rule(vec![cond(
            0,
            SeccompCmpOp::Eq,
            libc::AF_VSOCK as u64,
        )?])?],
    );

    let arch = std::env::consts::ARCH.try_into().map_err(filter_err)?;
    let refuse = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(filter_err)?;
    let refuse: BpfProgram = refuse.try_into().map_err(filter_err)?;
    Ok(vec![refuse, enosys_filter()])
}

/// A hand-written program: `clone3` and (on x86_64) any x32 call fail with `ENOSYS`.
fn enosys_filter() -> BpfProgram {
    const NR: u32 = 0; // offsetof(struct seccomp_data, nr)
    const ARCH: u32 = 4; // offsetof(struct seccomp_data, arch)
    let ld = |offset| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset);
    let enosys = libc::SECCOMP_RET_ERRNO | (libc::ENOSYS as u32 & libc::SECCOMP_RET_DATA);
    let mut p = vec![
        ld(ARCH),
        // Other architectures: leave them to the first filter, which kills them.
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_NATIVE,
            1,
            0,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        ld(NR),
    ];
    #[cfg(target_arch = "x86_64")]
    p.push(jump(
        libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
        X32_SYSCALL_BIT,
        2,
        0,
    ));
    p.extend([
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            libc::SYS_clone3 as u32,
            1,
            0,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
        stmt(libc::BPF_RET | libc::BPF_K, enosys),
    ]);
    p
}

fn stmt(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u32, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

fn filter_err(e: impl std::fmt::Display) -> Error {
    Error::Setup(format!("building the seccomp filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_filters_compile() {
        let filters = default_filters(&crate::caps::DEFAULT_CAPABILITIES).unwrap();
        assert_eq!(filters.len(), 2);
        assert!(filters[0].len() > REFUSED.len());
        // Every jump of the hand-written program lands inside it.
        let p = &filters[1];
        for (i, ins) in p.iter().enumerate() {
            if ins.code as u32 & 0x07 == libc::BPF_JMP {
                assert!(i + 1 + (ins.jt.max(ins.jf) as usize) < p.len());
            }
        }
        assert_eq!(
            p.last().unwrap().k & libc::SECCOMP_RET_DATA,
            libc::ENOSYS as u32
        );
    }

    #[test]
    fn capabilities_give_back_only_their_calls() {
        for (_, calls) in GRANTED_BY {
            for nr in *calls {
                assert!(REFUSED.contains(nr), "{nr} is granted but never refused");
            }
        }
        let default = default_filters(&crate::caps::DEFAULT_CAPABILITIES).unwrap();
        let mut admin = crate::caps::DEFAULT_CAPABILITIES.to_vec();
        admin.push(Capability::CAP_SYS_ADMIN);
        let relaxed = default_filters(&admin).unwrap();
        assert!(relaxed[0].len() < default[0].len());
    }
}
