package bench

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync/atomic"
	"time"
)

const (
	sockBufSize = 4 << 20 // requested SO_RCVBUF/SO_SNDBUF (capped by the kernel)
	maxMsg      = 65535
	// sendBufSize holds any query we build: header (12) + name (255) +
	// type/class (4) + OPT (11).
	sendBufSize = 512
)

// tcpConn is a TCP connection carrying many pipelined queries with RFC 7766
// two-byte length framing. Sends are buffered and flushed per burst.
type tcpConn struct {
	c           *net.TCPConn
	bw          *bufio.Writer
	br          *bufio.Reader
	wbuf        []byte // 2-byte length + query
	rbuf        []byte
	hdr         [2]byte
	interrupted atomic.Bool
}

func dialTCP(w *worker) (conn, error) {
	d := net.Dialer{Timeout: w.e.cfg.Timeout, LocalAddr: tcpLocal(w.e.source(w.idx))}
	c, err := d.Dial("tcp", w.e.target.String())
	if err != nil {
		return nil, err
	}
	tc := c.(*net.TCPConn)
	_ = tc.SetNoDelay(true)
	return &tcpConn{
		c:    tc,
		bw:   bufio.NewWriterSize(tc, 64<<10),
		br:   bufio.NewReaderSize(tc, 64<<10),
		wbuf: make([]byte, 2+sendBufSize),
		rbuf: make([]byte, maxMsg),
	}, nil
}

func (t *tcpConn) buf() []byte { return t.wbuf[2:] }

func (t *tcpConn) send(n int) error {
	binary.BigEndian.PutUint16(t.wbuf, uint16(n))
	_, err := t.bw.Write(t.wbuf[:2+n])
	return err
}

func (t *tcpConn) flush() error { return t.bw.Flush() }

func (t *tcpConn) readLoop(w *worker) bool {
	for {
		if _, err := io.ReadFull(t.br, t.hdr[:]); err != nil {
			return !t.interrupted.Load()
		}
		n := int(binary.BigEndian.Uint16(t.hdr[:]))
		if _, err := io.ReadFull(t.br, t.rbuf[:n]); err != nil {
			return !t.interrupted.Load()
		}
		w.handleReply(t.rbuf[:n], w.e.now())
	}
}

func (t *tcpConn) interrupt() {
	t.interrupted.Store(true)
	_ = t.c.SetReadDeadline(time.Unix(1, 0))
}

func (t *tcpConn) close() { _ = t.c.Close() }
