//go:build !linux

package echo

func (s *Server) serveUDP() { s.serveUDPPlain() }
