// Non-dumpable process and the seccomp allow-list of `mlcapsule-core` (see sandbox.h). The
// allow-list is written for what the core does after start-up: read a request from its socket,
// compute with OpenMP threads and oneDNN's JIT kernels, allocate (secret) memory, bump the counter
// file it opened before, and write the reply. docs/core-protocol.md repeats the lists with reasons.
#include "tee/software/sandbox.h"

#include <sched.h>
#include <seccomp.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <dnnl.hpp>

#include <cerrno>
#include <cstring>
#include <vector>

#include "tee/software/secret_memory.h"

namespace mlcapsule::tee {
namespace {

// Allowed without conditions. Anything else fails with EPERM (or kills, see kKilled), so a
// forgotten call shows up as a visible error rather than a silent success.
constexpr const char* kAllowed[] = {
    // I/O on descriptors the core already holds: the socket, stderr, the counter file, the TPM
    // connection and the attester's socket (poll: the TPM transport's response timeout).
    "read", "write", "readv", "writev", "pread64", "pwrite64", "recvmsg", "sendmsg", "recvfrom",
    "sendto", "close", "lseek", "fsync", "fdatasync", "fstat", "newfstatat", "poll", "ppoll",
    // Memory: the allocator, oneDNN's JIT (mprotect to PROT_EXEC), and secret memory.
    "mmap", "munmap", "mprotect", "madvise", "mremap", "brk", "mlock", "munlock", "ftruncate",
    // Threads (OpenMP) and their synchronisation.
    "futex", "set_robust_list", "rseq", "sched_yield", "sched_getaffinity", "sched_setaffinity",
    "getcpu",
    // Time and randomness.
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
    "getrandom",
    // Identity, signals, limits, exit.
    "getpid", "gettid", "getppid", "rt_sigprocmask", "rt_sigaction", "rt_sigreturn", "sigaltstack",
    "restart_syscall", "sysinfo", "getrlimit", "exit", "exit_group"};

// Kill the whole process: each of these is a way out of the box (run another program, reach
// another process's memory, the network, the file system, new processes, the kernel itself).
constexpr const char* kKilled[] = {"execve",
                                   "execveat",
                                   "ptrace",
                                   "process_vm_readv",
                                   "process_vm_writev",
                                   "process_madvise",
                                   "pidfd_open",
                                   "pidfd_getfd",
                                   "kcmp",
                                   "socket",
                                   "socketpair",
                                   "connect",
                                   "bind",
                                   "listen",
                                   "accept",
                                   "accept4",
                                   "open",
                                   "openat",
                                   "openat2",
                                   "creat",
                                   "name_to_handle_at",
                                   "open_by_handle_at",
                                   "fork",
                                   "vfork",
                                   "kexec_load",
                                   "kexec_file_load",
                                   "init_module",
                                   "finit_module",
                                   "delete_module",
                                   "mount",
                                   "umount2",
                                   "pivot_root",
                                   "chroot",
                                   "setns",
                                   "unshare",
                                   "bpf",
                                   "perf_event_open",
                                   "userfaultfd",
                                   "io_uring_setup",
                                   "io_uring_enter",
                                   "io_uring_register",
                                   "keyctl",
                                   "add_key",
                                   "request_key",
                                   "personality",
                                   "iopl",
                                   "ioperm",
                                   "reboot",
                                   "swapon",
                                   "swapoff"};

Status Resolve(const char* name, int* number) {
  *number = seccomp_syscall_resolve_name(name);
  if (*number == __NR_SCMP_ERROR) return InternalError("seccomp: unknown system call '{}'", name);
  return Status::Ok();
}

Status Check(int rc, const char* what) {
  if (rc < 0) return InternalError("seccomp: {} failed: {}", what, std::strerror(-rc));
  return Status::Ok();
}

Status AddRules(scmp_filter_ctx filter) {
  for (const char* name : kAllowed) {
    int number = 0;
    MLC_RETURN_IF_ERROR(Resolve(name, &number));
    MLC_RETURN_IF_ERROR(Check(seccomp_rule_add(filter, SCMP_ACT_ALLOW, number, 0), name));
  }
  for (const char* name : kKilled) {
    int number = 0;
    MLC_RETURN_IF_ERROR(Resolve(name, &number));
    MLC_RETURN_IF_ERROR(Check(seccomp_rule_add(filter, SCMP_ACT_KILL_PROCESS, number, 0), name));
  }
  MLC_RETURN_IF_ERROR(
      Check(seccomp_rule_add(filter, SCMP_ACT_ALLOW, kMemfdSecretSyscall, 0), "memfd_secret"));
#ifdef MLCAPSULE_SANITIZER_BUILD
  // Sanitizer builds only: UBSan's vptr check tests whether memory is readable by writing it
  // into a pipe.
  MLC_RETURN_IF_ERROR(Check(seccomp_rule_add(filter, SCMP_ACT_ALLOW, SCMP_SYS(pipe2), 0), "pipe2"));
#endif

  // Threads yes, processes no: clone must carry CLONE_THREAD (pthread_create does; fork and
  // posix_spawn do not). clone3 passes its flags in memory the filter cannot read, so it answers
  // ENOSYS and glibc falls back to clone.
  MLC_RETURN_IF_ERROR(
      Check(seccomp_rule_add(filter, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
                             SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD)),
            "clone (threads)"));
  MLC_RETURN_IF_ERROR(Check(seccomp_rule_add(filter, SCMP_ACT_KILL_PROCESS, SCMP_SYS(clone), 1,
                                             SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0)),
                            "clone (processes)"));
  MLC_RETURN_IF_ERROR(
      Check(seccomp_rule_add(filter, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0), "clone3"));

  // Reading limits only (glibc's getrlimit is prlimit64 with a null new limit).
  MLC_RETURN_IF_ERROR(Check(
      seccomp_rule_add(filter, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 1, SCMP_A2(SCMP_CMP_EQ, 0)),
      "prlimit64"));
  // abort() signals its own thread; signalling other processes stays forbidden.
  MLC_RETURN_IF_ERROR(
      Check(seccomp_rule_add(filter, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
                             SCMP_A0(SCMP_CMP_EQ, static_cast<scmp_datum_t>(getpid()))),
            "tgkill"));
  return Status::Ok();
}

}  // namespace

Status HardenProcess() {
  if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
    return InternalError("prctl(PR_SET_DUMPABLE, 0) failed: {}", std::strerror(errno));
  struct rlimit no_core {};
  if (setrlimit(RLIMIT_CORE, &no_core) != 0)
    return InternalError("setrlimit(RLIMIT_CORE, 0) failed: {}", std::strerror(errno));
  if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
    return InternalError("prctl(PR_SET_NO_NEW_PRIVS, 1) failed: {}", std::strerror(errno));
  return Status::Ok();
}

Status WarmUpRuntimes() {
  using tag = dnnl::memory::format_tag;
  using dt = dnnl::memory::data_type;
  try {
    dnnl::set_jit_profiling_flags(0);
    dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    dnnl::stream stream(engine);
    auto run = [&](const dnnl::primitive& primitive, const dnnl::memory::desc& src,
                   const dnnl::memory::desc& weights, const dnnl::memory::desc& dst) {
      std::vector<float> src_data(src.get_size() / 4, 1.0f), dst_data(dst.get_size() / 4);
      std::vector<float> weight_data(weights.get_size() / 4, 0.5f);
      primitive.execute(stream,
                        {{DNNL_ARG_SRC, dnnl::memory(src, engine, src_data.data())},
                         {DNNL_ARG_WEIGHTS, dnnl::memory(weights, engine, weight_data.data())},
                         {DNNL_ARG_DST, dnnl::memory(dst, engine, dst_data.data())}});
      stream.wait();
    };
    dnnl::memory::desc src({1, 8, 8, 8}, dt::f32, tag::nhwc), dst({1, 8, 8, 8}, dt::f32, tag::nhwc);
    dnnl::memory::desc weights_any({8, 8, 3, 3}, dt::f32, tag::any);
    dnnl::convolution_forward::primitive_desc conv(
        dnnl::convolution_forward::desc(dnnl::prop_kind::forward_inference,
                                        dnnl::algorithm::convolution_direct, src, weights_any, dst,
                                        {1, 1}, {1, 1}, {1, 1}),
        engine);
    run(dnnl::convolution_forward(conv), src, conv.weights_desc(), dst);
    dnnl::memory::desc rows({4, 16}, dt::f32, tag::nc), out({4, 8}, dt::f32, tag::nc);
    dnnl::inner_product_forward::primitive_desc inner(
        dnnl::inner_product_forward::desc(dnnl::prop_kind::forward_inference, rows,
                                          dnnl::memory::desc({8, 16}, dt::f32, tag::any), out),
        engine);
    run(dnnl::inner_product_forward(inner), rows, inner.weights_desc(), out);
  } catch (const dnnl::error& error) {
    return InternalError("warming up oneDNN failed: {} (status {})", error.what(),
                         static_cast<int>(error.status));
  }
  return Status::Ok();
}

Status EnterSeccomp() {
  scmp_filter_ctx filter = seccomp_init(SCMP_ACT_ERRNO(EPERM));
  if (filter == nullptr) return InternalError("seccomp_init failed");
  Status status = Check(seccomp_attr_set(filter, SCMP_FLTATR_CTL_TSYNC, 1), "TSYNC attribute");
  if (status.ok())
    status = Check(seccomp_attr_set(filter, SCMP_FLTATR_CTL_NNP, 1), "NNP attribute");
  // System calls of another ABI (i386 through int 0x80, x32 numbers) kill, like the worst here.
  if (status.ok())
    status = Check(seccomp_attr_set(filter, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS),
                   "bad-architecture action");
  if (status.ok()) status = AddRules(filter);
  if (status.ok()) status = Check(seccomp_load(filter), "loading the filter");
  seccomp_release(filter);
  return status;
}

}  // namespace mlcapsule::tee
