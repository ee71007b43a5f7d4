// Package testutil holds what the tests of several packages share, so
// that each exists once:
//
//   - build.go: the binaries the tests run, built once per test binary
//     (Binary), and the repository's files from any package (Path).
//   - dns.go: DNS servers on loopback (Serve, StartUpstream), zone-file
//     answers (Zone), clients (Exchange, Forward) and metric reads.
//   - ports.go: free loopback ports for servers that bind their own.
//   - proc.go: processes that die with the test (DieWithTest,
//     StartProcess), their output read while they run (Buffer).
//   - daemon.go: nodedns itself as a process on loopback (StartDaemon).
//   - netns.go: network namespaces (NewNetns, EnterNewNetns) and the
//     threads that join them (Netns.Enter, Netns.Do).
//   - require.go: skipping, outside CI, where root or a tool is missing.
package testutil
