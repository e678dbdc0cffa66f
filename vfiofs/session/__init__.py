"""The I/O shell: /dev/fuse, mounting, the serve loop, the caller's memory and fds,
seccomp and namespaces. The only code that uses trio, ctypes and syscalls."""
