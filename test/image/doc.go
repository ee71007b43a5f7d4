// Package image tests the container image that `make image` builds
// (image/build.sh, from the repository's Dockerfile): that two builds give
// the same digest, that its configuration (entrypoint, user, ports, labels)
// is what the DaemonSet of deploy/ expects, and that nodedns runs from the
// image's own root filesystem, unpacked by umoci, the way the DaemonSet
// runs it (its user, capabilities, read-only root, volumes and arguments),
// inside a network namespace the test creates: it sets up its node-local
// address and rules and answers dig. There is no container engine on the
// build machine, so no container runtime runs it: a small stand-in does
// what runc would (mounts, chroot, capabilities, no_new_privs).
package image
