package image

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The container runtime's stand-in. There is no container engine here, and
// crun, which buildah's package installs, refuses to start on this
// machine's hybrid cgroup hierarchy; so the test binary itself, started
// with initEnv set inside the test's network namespace (by `ip netns exec`,
// which gives it a mount namespace of its own), does what runc does for a
// Kubernetes container before it executes the entrypoint: it mounts /proc,
// a read-only /sys and the volumes into the root filesystem, makes the
// root read-only, changes root, keeps only the capabilities the security
// context adds (drop ALL: the bounding, permitted and effective sets; no
// inheritable or ambient ones), sets no_new_privs, and executes the
// entrypoint in place. Not done: cgroups (no memory limit is applied),
// the PID, IPC and UTS namespaces, /dev, seccomp and AppArmor.

// initEnv carries the container's spec, as JSON, to the stand-in.
const initEnv = "NODEDNS_IMAGE_TEST_INIT"

// containerSpec is what the stand-in needs to start the container.
type containerSpec struct {
	Rootfs     string   // the unpacked root filesystem
	Args       []string // the entrypoint and its arguments; Args[0] is a path inside Rootfs
	Env        []string
	UID, GID   int
	Caps       []int // capability numbers kept
	NoNewPrivs bool
	ReadOnly   bool // the root filesystem
	Mounts     []bindMount
}

// bindMount is a volume: a host file or directory at a path in the container.
type bindMount struct {
	Source, Target string
	ReadOnly       bool
}

// containerInit runs in the stand-in process (TestMain, when initEnv is
// set). It returns only on failure.
func containerInit(specJSON string) error {
	// Capabilities and credentials belong to a thread: set them on the one
	// that calls execve.
	runtime.LockOSThread()
	var s containerSpec
	if err := json.Unmarshal([]byte(specJSON), &s); err != nil {
		return err
	}
	if s.UID != 0 || s.GID != 0 {
		return fmt.Errorf("the stand-in runs containers as root only, not %d:%d", s.UID, s.GID)
	}
	lastCap, err := readInt("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return err
	}
	// `ip netns exec` made this mount namespace and left it a slave of
	// the machine's: make it private, so nothing below leaks out.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making / private: %w", err)
	}
	root := s.Rootfs
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding the root filesystem: %w", err)
	}
	// Mount points are made in the root filesystem before it turns
	// read-only, as runc makes them.
	if err := mountAt(root, "/proc", func(dst string) error {
		return unix.Mount("proc", dst, "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}, true); err != nil {
		return err
	}
	if err := mountAt(root, "/sys", func(dst string) error {
		return unix.Mount("sysfs", dst, "sysfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	}, true); err != nil {
		return err
	}
	for _, m := range s.Mounts {
		st, err := os.Stat(m.Source)
		if err != nil {
			return err
		}
		if err := mountAt(root, m.Target, func(dst string) error {
			if err := unix.Mount(m.Source, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
				return err
			}
			if m.ReadOnly {
				return unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
			}
			return nil
		}, st.IsDir()); err != nil {
			return err
		}
	}
	if s.ReadOnly {
		if err := unix.Mount("", root, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("making the root filesystem read-only: %w", err)
		}
	}
	if err := unix.Chroot(root); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	// No supplementary groups (the image has no /etc/group; the pod adds
	// none), on this thread.
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, 0, 0, 0); e != 0 {
		return fmt.Errorf("setgroups: %w", e)
	}
	keep := map[int]bool{}
	var data [2]unix.CapUserData
	for _, c := range s.Caps {
		keep[c] = true
		data[c/32].Effective |= 1 << (c % 32)
		data[c/32].Permitted |= 1 << (c % 32)
	}
	for c := 0; c <= lastCap; c++ {
		if !keep[c] {
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
				return fmt.Errorf("dropping capability %d from the bounding set: %w", c, err)
			}
		}
	}
	if err := unix.Capset(&unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}, &data[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clearing ambient capabilities: %w", err)
	}
	if s.NoNewPrivs {
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			return fmt.Errorf("no_new_privs: %w", err)
		}
	}
	return syscall.Exec(s.Args[0], s.Args, s.Env)
}

// mountAt makes the mount point target (a directory, or an empty file)
// under root and calls mount on its host path.
func mountAt(root, target string, mount func(dst string) error, dir bool) error {
	dst := filepath.Join(root, target)
	if dir {
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
	} else {
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		f, err := os.OpenFile(dst, os.O_CREATE|os.O_RDONLY, 0o644)
		if err != nil {
			return err
		}
		f.Close()
	}
	if err := mount(dst); err != nil {
		return fmt.Errorf("mounting %s: %w", target, err)
	}
	return nil
}

func readInt(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}
