//! strait-ebpf: eBPF policy programs (C) and their loader ABI. Not yet written: see the policy issue.
