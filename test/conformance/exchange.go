package conformance

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"time"

	"github.com/miekg/dns"
)

// Msg builds the query message with the given ID.
func (q Query) Msg(id uint16) *dns.Msg {
	m := new(dns.Msg)
	m.Id = id
	m.Opcode = q.Mode.Opcode
	m.Response = q.Mode.QR
	m.RecursionDesired = !q.Mode.NoRD
	m.CheckingDisabled = q.Mode.CD
	m.AuthenticatedData = q.Mode.AD
	m.Question = []dns.Question{{Name: q.Name, Qtype: q.Type, Qclass: q.Class}}
	if q.Mode.EDNS {
		opt := &dns.OPT{Hdr: dns.RR_Header{Name: ".", Rrtype: dns.TypeOPT}}
		opt.SetUDPSize(q.Mode.UDPSize)
		opt.SetDo(q.Mode.DO)
		opt.SetVersion(q.Mode.Version)
		for _, o := range q.Mode.Options {
			switch o {
			case "nsid":
				opt.Option = append(opt.Option, &dns.EDNS0_NSID{Code: dns.EDNS0NSID})
			case "cookie":
				opt.Option = append(opt.Option, &dns.EDNS0_COOKIE{Code: dns.EDNS0COOKIE, Cookie: "0123456789abcdef"})
			case "ecs":
				opt.Option = append(opt.Option, &dns.EDNS0_SUBNET{Code: dns.EDNS0SUBNET, Family: 1, SourceNetmask: 24, Address: net.IPv4(192, 0, 2, 0).To4()})
			case "unknown":
				opt.Option = append(opt.Option, &dns.EDNS0_LOCAL{Code: 65001, Data: []byte{1, 2, 3}})
			}
		}
		m.Extra = append(m.Extra, opt)
		if q.Mode.TwoOPT {
			m.Extra = append(m.Extra, dns.Copy(opt))
		}
	}
	return m
}

// Reply is what a server sent back to one query.
type Reply struct {
	Msg  *dns.Msg // nil when there was no reply or it did not unpack
	Size int      // bytes on the wire
	Err  string   // "" when Msg is set; "timeout", "closed", "malformed: ..."
}

// NoReply reports whether the server sent nothing back.
func (r Reply) NoReply() bool { return r.Msg == nil && r.Size == 0 }

// Exchange asks q once of the server at addr (IP:port) over the query's
// transport and waits up to timeout for the reply with its ID. There are
// no retries: a lost UDP reply on loopback is a server's silence.
func Exchange(addr string, q Query, timeout time.Duration) Reply {
	id := uint16(rand.Uint32())
	wire, err := q.Msg(id).Pack()
	if err != nil {
		return Reply{Err: "pack: " + err.Error()}
	}
	deadline := time.Now().Add(timeout)
	var raw []byte
	if q.Mode.TCP {
		raw, err = exchangeTCP(addr, wire, deadline)
	} else {
		raw, err = exchangeUDP(addr, wire, id, deadline)
	}
	if err != nil {
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			return Reply{Err: "timeout"}
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return Reply{Err: "closed"}
		default:
			return Reply{Err: "network: " + err.Error()}
		}
	}
	m := new(dns.Msg)
	if err := m.Unpack(raw); err != nil {
		return Reply{Size: len(raw), Err: "malformed: " + err.Error()}
	}
	if m.Id != id {
		return Reply{Size: len(raw), Err: fmt.Sprintf("malformed: ID %d, asked %d", m.Id, id)}
	}
	return Reply{Msg: m, Size: len(raw)}
}

func exchangeUDP(addr string, wire []byte, id uint16, deadline time.Time) ([]byte, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	if _, err := c.Write(wire); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		// Another ID is a late reply to someone else: keep waiting.
		if n >= 2 && binary.BigEndian.Uint16(buf) == id {
			return buf[:n:n], nil
		}
	}
}

func exchangeTCP(addr string, wire []byte, deadline time.Time) ([]byte, error) {
	c, err := net.DialTimeout("tcp", addr, time.Until(deadline))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(deadline)
	out := make([]byte, 2+len(wire))
	binary.BigEndian.PutUint16(out, uint16(len(wire)))
	copy(out[2:], wire)
	if _, err := c.Write(out); err != nil {
		return nil, err
	}
	var l [2]byte
	if _, err := io.ReadFull(c, l[:]); err != nil {
		return nil, err
	}
	buf := make([]byte, binary.BigEndian.Uint16(l[:]))
	if _, err := io.ReadFull(c, buf); err != nil {
		return nil, err
	}
	return buf, nil
}
