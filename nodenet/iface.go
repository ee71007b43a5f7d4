package nodenet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Interface modes.
const (
	modeDummy = "dummy" // a dummy link of its own, as NodeLocal DNSCache makes
	modeLo    = "lo"    // the fallback: the addresses on lo
)

// loLabel marks the IPv4 addresses nodedns puts on lo, so that `ip addr`
// says whose they are (a label must start with the link's name).
const loLabel = "lo:nodedns"

// iface is the local interface holding the listen addresses.
type iface struct {
	name  string       // the dummy link's name, or "lo"
	addrs []netip.Addr // never loopback or unspecified
	ns    netns.NsHandle

	// mode is modeDummy or modeLo once the first ensure has run, "" before.
	// It falls back to lo once, when the kernel refuses to make a dummy
	// link, and never goes back.
	mode     string
	fellBack bool // mode is lo because the kernel has no dummy links
}

// link is the name of the link that holds the addresses.
func (f *iface) link() string {
	if f.mode == modeLo || f.name == modeLo {
		return modeLo
	}
	return f.name
}

// ensure creates what is missing and says what that was: "interface" (the
// dummy link, or bringing it up) and "address" (one per address).
func (f *iface) ensure() (restored []string, err error) {
	h, err := netlinkHandle(f.ns)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	if f.name == modeLo {
		f.mode = modeLo
	}
	var l netlink.Link
	if f.mode != modeLo {
		l, err = h.LinkByName(f.name)
		switch {
		case errors.As(err, new(netlink.LinkNotFoundError)):
			err = h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: f.name}})
			switch {
			case err == nil:
				f.mode = modeDummy
				restored = append(restored, "interface")
				if l, err = h.LinkByName(f.name); err != nil {
					return restored, err
				}
			case f.mode == "" && errors.Is(err, unix.EOPNOTSUPP):
				// No dummy driver (the module is missing): lo it is.
				f.mode, f.fellBack = modeLo, true
			default:
				return restored, fmt.Errorf("creating dummy link %s: %w", f.name, err)
			}
		case err != nil:
			return nil, err
		case l.Type() != "dummy":
			return nil, fmt.Errorf("link %s exists and is a %s link, not a dummy one: choose another interface name", f.name, l.Type())
		default:
			f.mode = modeDummy
		}
	}
	if f.mode == modeLo {
		if l, err = h.LinkByName(modeLo); err != nil {
			return restored, err
		}
	}
	if l.Attrs().Flags&net.FlagUp == 0 {
		if err := h.LinkSetUp(l); err != nil {
			return restored, fmt.Errorf("setting %s up: %w", l.Attrs().Name, err)
		}
		if f.mode == modeDummy && len(restored) == 0 {
			restored = append(restored, "interface")
		}
	}
	have, err := addrList(h, l)
	if err != nil {
		return restored, err
	}
	for _, a := range f.addrs {
		if have[a] {
			continue
		}
		if err := h.AddrAdd(l, f.addr(a)); err != nil && !errors.Is(err, unix.EEXIST) {
			return restored, fmt.Errorf("adding %s to %s: %w", a, l.Attrs().Name, err)
		}
		restored = append(restored, "address")
	}
	return restored, nil
}

// addr is a as a host route (/32, /128) on the interface: the address is
// local and nothing else is routed there. IPv6 skips duplicate address
// detection, which would keep it tentative (unbindable) for a second or
// more.
func (f *iface) addr(a netip.Addr) *netlink.Addr {
	na := &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(a.BitLen(), a.BitLen())}}
	if a.Is6() {
		na.Flags = unix.IFA_F_NODAD
	} else if f.mode == modeLo {
		na.Label = loLabel
	}
	return na
}

// addrList is the set of addresses on l.
func addrList(h *netlink.Handle, l netlink.Link) (map[netip.Addr]bool, error) {
	var list []netlink.Addr
	var err error
	for range 3 { // a dump that changed while it was read is read again
		if list, err = h.AddrList(l, netlink.FAMILY_ALL); !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listing the addresses of %s: %w", l.Attrs().Name, err)
	}
	have := make(map[netip.Addr]bool, len(list))
	for _, a := range list {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			have[ip.Unmap()] = true
		}
	}
	return have, nil
}

// remove deletes the dummy link (its addresses go with it), or, on lo, the
// listen addresses.
func (f *iface) remove() error {
	h, err := netlinkHandle(f.ns)
	if err != nil {
		return err
	}
	defer h.Close()
	if f.link() != modeLo {
		l, err := h.LinkByName(f.name)
		if errors.As(err, new(netlink.LinkNotFoundError)) {
			return nil
		}
		if err != nil {
			return err
		}
		if l.Type() != "dummy" {
			return fmt.Errorf("link %s is a %s link, not the dummy link nodedns made: left alone", f.name, l.Type())
		}
		return h.LinkDel(l)
	}
	l, err := h.LinkByName(modeLo)
	if err != nil {
		return err
	}
	have, err := addrList(h, l)
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range f.addrs {
		if !have[a] {
			continue
		}
		if err := h.AddrDel(l, f.addr(a)); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = append(errs, fmt.Errorf("removing %s from lo: %w", a, err))
		}
	}
	return errors.Join(errs...)
}

// checkLinkName refuses a name the kernel would: empty, longer than 15
// bytes, or with a slash, a colon or white space.
func checkLinkName(name string) error {
	if name == "" || len(name) > 15 || name == "." || name == ".." || strings.ContainsAny(name, "/: \t\n") {
		return fmt.Errorf("node networking: interface name %q is not a valid link name (1 to 15 characters, no '/', ':' or spaces)", name)
	}
	return nil
}
