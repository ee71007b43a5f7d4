// Package e2e holds end-to-end tests that run nodedns as a process among
// real peers: CoreDNS as the cluster DNS upstream and glibc's resolver
// (getent) as the client, inside a network namespace the test creates, so
// that a real client can use nodedns on port 53 without touching the
// machine's own resolver configuration.
package e2e
