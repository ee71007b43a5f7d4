//go:build !linux

package resolver

import "net/netip"

// Hand-over needs Linux's reuseport semantics for connected UDP sockets;
// elsewhere a stopping server simply stops.

// PeersServe reports false: hand-over is Linux only.
func PeersServe([]string) bool { return false }

func (s *Server) ownInodes() map[uint64]bool { return nil }

func peersServe(_ []netip.AddrPort, _ map[uint64]bool) bool { return false }

func (s *Server) leaveUDP() error { return nil }

func (s *Server) queuedUDP() bool { return false }
