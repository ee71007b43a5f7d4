package resolver

import (
	"net"
	"net/netip"

	"go.uber.org/zap"
)

// writeUDP sends one reply outside the reader's batch (misses, stale and
// shed answers); a failure is the client's problem (gone, unreachable) and
// is only logged at debug level. An empty reply is not sent.
func (s *Server) writeUDP(conn *net.UDPConn, b []byte, dst netip.AddrPort) {
	if len(b) == 0 {
		return
	}
	if _, err := conn.WriteToUDPAddrPort(b, dst); err != nil {
		if ce := s.log.Check(zap.DebugLevel, "writing UDP reply"); ce != nil {
			ce.Write(zap.Stringer("client", dst), zap.Error(err))
		}
	}
}
