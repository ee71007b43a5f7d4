package suite

import (
	"bufio"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Parsers for the /proc files the suite samples. They take the file's text
// so that they can be tested without a process.

// Memory is what /proc/PID/status says about a process's resident memory.
type Memory struct {
	RSS uint64 // VmRSS, bytes
	HWM uint64 // VmHWM (peak RSS since the process started), bytes
}

// ParseStatus reads VmRSS and VmHWM from the text of /proc/PID/status.
func ParseStatus(text string) (Memory, error) {
	var m Memory
	var haveRSS, haveHWM bool
	for line := range strings.SplitSeq(text, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok || (key != "VmRSS" && key != "VmHWM") {
			continue
		}
		f := strings.Fields(val)
		if len(f) != 2 || f[1] != "kB" {
			return m, fmt.Errorf("status: %s: unexpected value %q", key, strings.TrimSpace(val))
		}
		n, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return m, fmt.Errorf("status: %s: %v", key, err)
		}
		if key == "VmRSS" {
			m.RSS, haveRSS = n*1024, true
		} else {
			m.HWM, haveHWM = n*1024, true
		}
	}
	if !haveRSS || !haveHWM {
		return m, errors.New("status: no VmRSS/VmHWM (a kernel thread, or a process that has exited)")
	}
	return m, nil
}

// ParseStatCPU returns utime+stime, in clock ticks, from the text of
// /proc/PID/stat. The command name (field 2) may contain spaces and
// parentheses, so fields are counted from the last ')'.
func ParseStatCPU(text string) (uint64, error) {
	i := strings.LastIndexByte(text, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')' after the command name")
	}
	f := strings.Fields(text[i+1:])
	// After ")": state(3) ppid(4) ... utime(14) stime(15); f[0] is field 3.
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	u, err := strconv.ParseUint(f[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: utime: %v", err)
	}
	s, err := strconv.ParseUint(f[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stat: stime: %v", err)
	}
	return u + s, nil
}

// ParseLoadavg returns the 1, 5 and 15 minute load averages from the text
// of /proc/loadavg.
func ParseLoadavg(text string) ([3]float64, error) {
	var la [3]float64
	f := strings.Fields(text)
	if len(f) < 3 {
		return la, errors.New("loadavg: fewer than 3 fields")
	}
	for i := range la {
		v, err := strconv.ParseFloat(f[i], 64)
		if err != nil {
			return la, fmt.Errorf("loadavg: %v", err)
		}
		la[i] = v
	}
	return la, nil
}

// UDPDrops sums the "drops" column of /proc/net/udp (or udp6) text for the
// sockets whose local port is port (the server's own sockets: datagrams the
// kernel discarded because the socket's receive buffer was full) and for
// those whose remote port is port (the clients' connected sockets).
func UDPDrops(text string, port int) (server, clients uint64, err error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	first := true
	for sc.Scan() {
		if first { // header
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 13 {
			continue
		}
		lp, err1 := hexPort(f[1])
		rp, err2 := hexPort(f[2])
		d, err3 := strconv.ParseUint(f[len(f)-1], 10, 64)
		if err1 != nil || err2 != nil || err3 != nil {
			return 0, 0, fmt.Errorf("net/udp: bad line %q", sc.Text())
		}
		if lp == port {
			server += d
		} else if rp == port {
			clients += d
		}
	}
	return server, clients, sc.Err()
}

func hexPort(addr string) (int, error) {
	_, p, ok := strings.Cut(addr, ":")
	if !ok {
		return 0, errors.New("no port")
	}
	n, err := strconv.ParseUint(p, 16, 16)
	return int(n), err
}
