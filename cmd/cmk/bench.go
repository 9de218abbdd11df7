package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cmk-project/cmk/internal/bench"
	"github.com/cmk-project/cmk/internal/monitor"
)

// benchNames are the measurements, in the order `all` runs them.
var benchNames = []string{"enable", "lake", "profile", "vaultcalls", "age", "tink", "revocation", "monitorcost", "rotation"}

// soloBenchNames are measurements `all` leaves out: they start processes
// and servers of their own, or load the machine for their whole run.
var soloBenchNames = []string{"failover", "load", "fleet", "enablescale", "crash"}

func newBenchCmd() *cobra.Command {
	var (
		output, dir string
		cpuProfile  string
		quiet       bool
		enable      bench.EnableConfig
		lake        bench.LakeConfig
		prof        bench.ProfileConfig
		calls       bench.VaultCallsConfig
		ageCfg      bench.AgeConfig
		tinkCfg     bench.TinkConfig
		rev         bench.RevocationConfig
		mon         bench.MonitorCostConfig
		rot         bench.RotationConfig
		fail        bench.FailoverConfig
		load        bench.LoadConfig
		fleet       bench.FleetConfig
		fleetCounts string
		scale       bench.EnableScaleConfig
		scaleCounts string
		interval    time.Duration
		crash       bench.CrashConfig
	)
	lakeSize, peakSize, ageSize := sizeFlag(256<<20), sizeFlag(2<<30), sizeFlag(1<<30)
	cmd := &cobra.Command{
		Use:   "bench [" + strings.Join(append(slices.Clone(benchNames), soloBenchNames...), "|") + "|all]...",
		Short: "Measure cmk against its performance and key-health targets",
		Long: `Run benchmarks against a local cmk: the Azure emulator and the whole service,
started in this process on temporary state, as 'cmk dev' does.

  enable       enablement of an org with many sandboxes against a throttled vault,
               against the throttle's lower bound
  lake         data-lake ingest and read, encrypted vs plain files (in process
               and over HTTP), and the heap held by one large encrypted upload
  profile      profile-record upsert and get, encrypted vs the same database
               storing plaintext, with the read cache off and on
  vaultcalls   key-vault calls per 100,000 data operations in steady state
  age          file encryption and decryption, our envelope format vs age
  tink         per-record encrypt+decrypt, our record path vs Tink's KMS
               envelope AEAD calling the vault for every record
  revocation   time from disabling (and re-enabling) the key in the vault to
               the first refused (and served) read; --aws: a key in AWS KMS
  monitorcost  key-vault calls per org per hour of monitoring, and state
               changes under a throttled vault
  rotation     time from a new key version in the vault to cmk picking it up,
               through Key Vault's event and by polling alone
  failover     time from SIGKILL of the 'cmk serve' process holding an
               enablement job's lease to the job moving on another replica,
               on PostgreSQL (not in all: it starts its own servers)
  load         many clients' lake and profile traffic over several orgs while
               one org's key rotates and another's is revoked and comes back:
               errors of the unaffected orgs (exit status 1 unless none),
               latency, refusals, rotation and revocation times, peak memory;
               not part of all
  fleet        10,000 orgs on customer keys in many vaults, checked every 30 s
               by 1 and by 3 'cmk serve' processes on one PostgreSQL: each
               replica's CPU, memory, share of the checks and their lateness,
               vault calls per org per hour, memory per org with warm data keys
               (not in all: about 15 minutes)
  enablescale  enablement of 3,000 sandboxes over 30 orgs, all submitted at once,
               on 1 and on 3 replicas: against one throttled vault (time over
               the throttle's bound) and with a vault per org (speed-up)
               (not in all: about 12 minutes)
  crash        'cmk serve' run as a process and SIGKILLed at seeded random moments
               of lake uploads, profile writes, an enablement job and a key
               rotation, then restarted: every acknowledged write must read back
               byte for byte, nothing partial be visible, every data key unwrap
               and every job finish (--crash-backend sqlite|postgres; not in
               all: 10 to 35 minutes for 100 trials)

Comparisons run the two sides in alternating order, pair after pair, and
print the median with the range [min – max]. Each measurement prints its
table when it ends; progress goes to stderr. Full runs take minutes to tens
of minutes each and need free disk for the file sizes given.`,
		Example: `  cmk bench age
  cmk bench lake --lake-size 1GiB --peak-size 2GiB
  cmk bench revocation --revocation-trials 50 --check-interval 1s
  cmk bench revocation --aws --revocation-trials 20
  cmk bench rotation --rotation-trials 20 --rotation-interval 30s
  cmk bench crash --crash-trials 100 --crash-seed 42
  cmk bench crash --crash-backend postgres --crash-trials 100 --crash-seed 42
  cmk bench enable --sandboxes 200 --throttle-limit 100 --throttle-window 2s
  cmk bench failover --failover-trials 10 --lease 2s
  cmk bench load --clients 200 --duration 60s
  cmk bench fleet --fleet-orgs 10000 --fleet-replicas 1,3 --check-interval 30s
  cmk bench enablescale --scale-sandboxes 3000 --scale-orgs 30 --scale-replicas 1,3
  cmk bench all --output json > bench.json`,
		ValidArgs: append(append(slices.Clone(benchNames), soloBenchNames...), "all"),
		Args:      cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "text" && output != "json" {
				return withHint(fmt.Errorf("--output %q is not a format", output), "use --output text or --output json")
			}
			names, err := benchSelection(args)
			if err != nil {
				return err
			}
			if slices.Contains(names, "load") {
				if err := checkLoadFlags(load); err != nil {
					return err
				}
			}
			if crash.Backend != bench.CrashSQLite && crash.Backend != bench.CrashPostgres {
				return withHint(fmt.Errorf("--crash-backend %q is not a backend", crash.Backend), "use --crash-backend sqlite or --crash-backend postgres")
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			common := bench.Common{Dir: dir}
			if !quiet {
				common.Progress = cmd.ErrOrStderr()
			}
			lake.Size, lake.PeakSize, ageCfg.Size = int64(lakeSize), int64(peakSize), int64(ageSize)
			if peakSize == 0 {
				lake.PeakSize = -1 // the config's zero means the default
			}
			tinkCfg.RecordSize = prof.RecordSize
			if interval < 0 {
				return withHint(fmt.Errorf("--check-interval %s is negative", interval), "give a positive duration such as 30s")
			}
			rev.Interval, fleet.Interval = interval, interval
			if fleet.ReplicaCounts, err = replicaCounts("--fleet-replicas", fleetCounts); err != nil {
				return err
			}
			if scale.ReplicaCounts, err = replicaCounts("--scale-replicas", scaleCounts); err != nil {
				return err
			}
			scale.ThrottleLimit, scale.ThrottleWindow = enable.ThrottleLimit, enable.ThrottleWindow
			// The replicas run this very program as 'cmk serve'.
			if slices.Contains(names, "fleet") || slices.Contains(names, "enablescale") {
				if fleet.Bin, err = selfPath(); err != nil {
					return err
				}
				scale.Bin = fleet.Bin
			}
			run := map[string]func() (fmt.Stringer, error){
				"enable":      func() (fmt.Stringer, error) { enable.Common = common; return bench.Enable(ctx, enable) },
				"lake":        func() (fmt.Stringer, error) { lake.Common = common; return bench.Lake(ctx, lake) },
				"profile":     func() (fmt.Stringer, error) { prof.Common = common; return bench.Profile(ctx, prof) },
				"vaultcalls":  func() (fmt.Stringer, error) { calls.Common = common; return bench.VaultCalls(ctx, calls) },
				"age":         func() (fmt.Stringer, error) { ageCfg.Common = common; return bench.Age(ctx, ageCfg) },
				"tink":        func() (fmt.Stringer, error) { tinkCfg.Common = common; return bench.Tink(ctx, tinkCfg) },
				"revocation":  func() (fmt.Stringer, error) { rev.Common = common; return bench.Revocation(ctx, rev) },
				"monitorcost": func() (fmt.Stringer, error) { mon.Common = common; return bench.MonitorCost(ctx, mon) },
				"rotation":    func() (fmt.Stringer, error) { rot.Common = common; return bench.Rotation(ctx, rot) },
				"failover": func() (fmt.Stringer, error) {
					fail.Common = common
					// This very binary is the cmk the replicas run.
					if exe, err := selfPath(); err == nil {
						fail.Binary = exe
					}
					return bench.Failover(ctx, fail)
				},
				"load":        func() (fmt.Stringer, error) { load.Common = common; return bench.Load(ctx, load) },
				"fleet":       func() (fmt.Stringer, error) { fleet.Common = common; return bench.Fleet(ctx, fleet) },
				"enablescale": func() (fmt.Stringer, error) { scale.Common = common; return bench.EnableScale(ctx, scale) },
				"crash": func() (fmt.Stringer, error) {
					crash.Common = common
					if crash.Bin == "" {
						// This binary is cmk: the processes killed run it.
						if crash.Bin, err = selfPath(); err != nil {
							return nil, err
						}
					}
					res, err := bench.Crash(ctx, crash)
					if res != nil && err != nil {
						fmt.Fprintln(cmd.OutOrStdout(), res.String())
					}
					return res, err
				},
			}
			if cpuProfile != "" {
				f, err := os.Create(cpuProfile)
				if err != nil {
					return withHint(fmt.Errorf("--cpuprofile: %w", err), "give a file path in a writable directory")
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				defer pprof.StopCPUProfile()
			}
			out := cmd.OutOrStdout()
			results := map[string]any{}
			var missed error
			for _, name := range names {
				start := time.Now()
				res, err := run[name]()
				if err != nil {
					return fmt.Errorf("bench %s: %w", name, err)
				}
				if !quiet {
					fmt.Fprintf(cmd.ErrOrStderr(), "%s: done in %s\n", name, time.Since(start).Round(time.Second))
				}
				if r, ok := res.(*bench.LoadResult); ok && !r.Met() {
					missed = fmt.Errorf("bench load: %d of %d requests of the unaffected orgs not served: %w",
						r.Unaffected.Errors+r.Unaffected.Refused, r.Unaffected.Requests, bench.ErrLoadMissed)
				}
				if output == "json" {
					results[name] = res
					continue
				}
				fmt.Fprintln(out, res.String())
			}
			if output == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				if err := enc.Encode(results); err != nil {
					return err
				}
			}
			return missed
		},
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "text", "text (tables) or json")
	f.StringVar(&dir, "dir", "", "directory for state and test files (default: a temporary directory)")
	f.BoolVarP(&quiet, "quiet", "q", false, "print no progress on stderr")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (read it with go tool pprof)")

	f.IntVar(&enable.Sandboxes, "sandboxes", 1000, "enable: sandboxes of the org (2 data keys each)")
	f.IntVar(&enable.ThrottleLimit, "throttle-limit", 1000, "enable, enablescale: key operations the throttled vault admits per window")
	f.DurationVar(&enable.ThrottleWindow, "throttle-window", 10*time.Second, "enable, enablescale: the throttled vault's window")

	f.Var(&lakeSize, "lake-size", "lake: size of the file ingested and read (e.g. 256MiB, 1GiB)")
	f.IntVar(&lake.Trials, "lake-trials", 11, "lake: interleaved pairs per comparison")
	f.Var(&peakSize, "peak-size", "lake: size of the upload whose peak memory is measured; 0 skips it")
	f.BoolVar(&lake.NoHTTP, "no-http", false, "lake: skip the comparisons over HTTP")

	f.IntVar(&prof.Records, "records", 1000, "profile: distinct records")
	f.IntVar(&prof.RecordSize, "record-size", 1024, "profile, tink: bytes per JSON record")
	f.IntVar(&prof.Ops, "ops", 10000, "profile: operations per side per round")
	f.IntVar(&prof.Rounds, "rounds", 21, "profile: interleaved rounds")
	f.StringVar(&prof.ProfilesDSN, "profiles-dsn", "", "profile: measure on this PostgreSQL database (postgres://...) instead of the embedded SQLite")

	f.IntVar(&calls.Ops, "data-ops", 100_000, "vaultcalls: data operations")
	f.IntVar(&calls.Workers, "workers", 4, "vaultcalls: concurrent clients")

	f.Var(&ageSize, "age-size", "age: size of the file (e.g. 1GiB)")
	f.IntVar(&ageCfg.Trials, "age-trials", 5, "age: interleaved pairs")

	f.IntVar(&tinkCfg.OurRecords, "our-records", 20_000, "tink: records per round on our path")
	f.IntVar(&tinkCfg.TinkRecords, "tink-records", 200, "tink: records per round through Tink (2 vault calls each)")
	f.IntVar(&tinkCfg.Rounds, "tink-rounds", 3, "tink: interleaved rounds")

	f.IntVar(&rev.Trials, "revocation-trials", 50, "revocation: disable/enable trials")
	f.DurationVar(&interval, "check-interval", 0, "revocation, fleet: key check interval (default 1s for revocation, 30s for fleet)")
	f.DurationVar(&rev.Poll, "poll", 5*time.Millisecond, "revocation: pause between reads of one probe")
	f.BoolVar(&rev.AWS, "aws", false, "revocation: measure an org whose key is in the local AWS KMS")

	f.IntVar(&mon.Orgs, "orgs", 4, "monitorcost: orgs on customer keys")
	f.DurationVar(&mon.Interval, "monitor-interval", 500*time.Millisecond, "monitorcost: check interval of the short run")
	f.DurationVar(&mon.Duration, "monitor-duration", time.Minute, "monitorcost: length of the cost run")
	f.IntVar(&mon.ThrottleLimit, "monitor-throttle-limit", 2, "monitorcost: key operations the throttled vault admits per window")
	f.DurationVar(&mon.ThrottleWindow, "monitor-throttle-window", time.Second, "monitorcost: the throttled vault's window")
	f.DurationVar(&mon.ThrottleDuration, "throttle-duration", time.Minute, "monitorcost: length of the throttled run")

	f.IntVar(&rot.Trials, "rotation-trials", 20, "rotation: trials with events and as many without")
	f.DurationVar(&rot.Interval, "rotation-interval", monitor.DefaultInterval, "rotation: key check interval (the polling side's)")

	f.IntVar(&fail.Trials, "failover-trials", 10, "failover: trials (an org each)")
	f.DurationVar(&fail.Lease, "lease", 5*time.Second, "failover: the replicas' --lease")
	f.IntVar(&fail.Replicas, "replicas", 3, "failover: 'cmk serve' processes")
	f.IntVar(&fail.Sandboxes, "failover-sandboxes", 100, "failover: sandboxes per org (2 data keys each)")
	f.DurationVar(&fail.VaultDelay, "vault-delay", 50*time.Millisecond, "failover: delay added to every vault call, so a job is mid-way when its holder is killed")
	f.IntVar(&load.Clients, "clients", 200, "load: concurrent clients")
	f.DurationVar(&load.Duration, "duration", time.Minute, "load: length of the traffic")
	f.IntVar(&load.Orgs, "load-orgs", 5, "load: orgs on customer keys (at least 3: one rotates, one is revoked)")
	f.DurationVar(&load.Interval, "load-interval", time.Second, "load: key check interval")
	f.Uint64Var(&load.Seed, "load-seed", 0, "load: seed of the clients' request mix (0 = random; the result names it)")
	f.IntVar(&fleet.Orgs, "fleet-orgs", 10_000, "fleet: orgs on customer keys, one key each")
	f.IntVar(&fleet.Vaults, "fleet-vaults", 100, "fleet: emulator vaults the keys are spread over")
	f.StringVar(&fleetCounts, "fleet-replicas", "1,3", "fleet: replica counts to run, in order, on the same orgs (1, 3 or 1,3)")
	f.DurationVar(&fleet.Duration, "fleet-duration", 0, "fleet: measured window of each run, after its warm-up (default three check intervals)")
	f.IntVar(&scale.Sandboxes, "scale-sandboxes", 3000, "enablescale: sandboxes in all (2 data keys each)")
	f.IntVar(&scale.Orgs, "scale-orgs", 30, "enablescale: orgs the sandboxes are spread over")
	f.StringVar(&scaleCounts, "scale-replicas", "1,3", "enablescale: replica counts to run each layout with, in order (the first is the speed-up's base)")
	f.IntVar(&fleet.CheckConcurrency, "fleet-check-concurrency", 0, "fleet: the replicas' --check-concurrency (default: theirs)")
	f.IntVar(&fleet.WarmOrgs, "fleet-warm-orgs", 2000, "fleet: orgs whose data keys the first run's replica loads to measure memory per org (-1: none)")
	f.IntVar(&fleet.KeyBits, "fleet-key-bits", 2048, "fleet: size of the orgs' RSA keys (2048, 3072 or 4096; the emulator's cost, not the replicas', grows with it)")
	f.IntVar(&crash.Trials, "crash-trials", 100, "crash: SIGKILLs of the serve process, one per trial")
	f.Uint64Var(&crash.Seed, "crash-seed", 0, "crash: seed of the run (trial i runs with seed+i; a failed trial is replayed alone with --crash-seed <its seed> --crash-trials 1); 0 = random")
	f.StringVar(&crash.Backend, "crash-backend", bench.CrashSQLite, "crash: sqlite (state, profiles, lake in local files) or postgres (PostgreSQL state and profiles, the lake in Azurite)")
	return cmd
}

// checkLoadFlags refuses a load run that could not measure what it says.
func checkLoadFlags(c bench.LoadConfig) error {
	switch {
	case c.Orgs < 3:
		return usageError(fmt.Errorf("--load-orgs %d: the load run needs at least 3 orgs (one key rotates, one is revoked, the others are unaffected)", c.Orgs),
			"use --load-orgs 3 or more")
	case c.Clients < c.Orgs:
		return usageError(fmt.Errorf("--clients %d for %d orgs: every org needs at least one client", c.Clients, c.Orgs),
			fmt.Sprintf("use --clients %d or more, or fewer --load-orgs", c.Orgs))
	case c.Duration <= 0 || c.Interval <= 0:
		return usageError(fmt.Errorf("--duration %s, --load-interval %s: both must be positive", c.Duration, c.Interval),
			"give durations such as 60s and 1s")
	}
	return nil
}

// replicaCounts parses a flag of replica counts separated by commas.
func replicaCounts(flag, v string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 16 {
			return nil, withHint(fmt.Errorf("%s %q: %q is not a replica count from 1 to 16", flag, v, f), "use "+flag+" 1, 3 or 1,3")
		}
		out = append(out, n)
	}
	return out, nil
}

// selfPath is the path of this program, to run it again as 'cmk serve'.
func selfPath() (string, error) {
	p, err := exec.LookPath(os.Args[0])
	if err != nil {
		return "", fmt.Errorf("find this program to run its replicas: %w", err)
	}
	return filepath.Abs(p)
}

// benchSelection expands "all" and rejects unknown names.
func benchSelection(args []string) ([]string, error) {
	var names []string
	for _, a := range args {
		switch {
		case a == "all":
			names = append(names, benchNames...)
		case slices.Contains(benchNames, a), slices.Contains(soloBenchNames, a):
			names = append(names, a)
		default:
			return nil, usageError(fmt.Errorf("no benchmark %q", a), "choose from "+strings.Join(append(slices.Clone(benchNames), soloBenchNames...), ", ")+" or all")
		}
	}
	return names, nil
}

// sizeFlag is a byte count written as a number with an optional binary
// unit: 512, 64KiB, 256MiB, 1GiB (K, M, G and KB, MB, GB mean the same).
type sizeFlag int64

func (s *sizeFlag) String() string { return formatSize(int64(*s)) }

func (s *sizeFlag) Type() string { return "size" }

func (s *sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

func parseSize(v string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(v))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GIB", 1 << 30}, {"MIB", 1 << 20}, {"KIB", 1 << 10}, {"GB", 1 << 30}, {"MB", 1 << 20}, {"KB", 1 << 10}, {"G", 1 << 30}, {"M", 1 << 20}, {"K", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("size %q: want a whole number of bytes with an optional unit, like 512MiB or 1GiB", v)
	}
	return n * mult, nil
}

func formatSize(n int64) string {
	switch {
	case n != 0 && n%(1<<30) == 0:
		return strconv.FormatInt(n>>30, 10) + "GiB"
	case n != 0 && n%(1<<20) == 0:
		return strconv.FormatInt(n>>20, 10) + "MiB"
	case n != 0 && n%(1<<10) == 0:
		return strconv.FormatInt(n>>10, 10) + "KiB"
	}
	return strconv.FormatInt(n, 10)
}
