// Package conformance is the differential conformance test of nodedns
// against Unbound: a Knot DNS server serves the zones of
// testdata/zones on loopback; Unbound, nodedns and (when it has been built)
// CoreDNS forward to it; a corpus of queries expanded from
// testdata/corpus.txt is asked of each, twice, and every answer of nodedns
// is compared with Unbound's by the normaliser of compare.go. A second
// nodedns forwards to a second Unbound instead of to Knot: Knot is not a
// recursive resolver (it leaves CNAMEs into other zones unresolved and sets
// AA), so that column shows what nodedns itself changes in the answers of
// the kind of upstream it has in a cluster.
//
// TestDifferential runs it all and writes a summary (a table of differences
// by category, one example each) and every differing answer; it fails on
// differences only in strict mode, and then only on those that
// known-differences.txt does not accept. README.md in this directory says
// how to run it and what each zone name is for.
package conformance
