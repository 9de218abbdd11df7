package servecmd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/service"
)

// The deployment files in deploy/ are read as cmkd and the orchestrator
// would read them: every flag, variable and configuration key must be one
// cmkd accepts (the settings are loaded by the command itself, up to the
// point where the service would start), and the probes, ports, selectors
// and the shutdown budget must agree with what those settings make cmkd do.

const deployDir = "../../deploy"

// fileSettings are the settings that name a file cmkd reads at start.
var fileSettings = []string{"system-key", "tls-cert", "tls-key", "azure-client-cert",
	"azure-client-secret-file", "operator-token-file", "lake-azure-account-key-file"}

// devSwitches must never appear in a production file.
var devSwitches = []string{"dev-token-issuer", "webhook-allow-http", "webhook-allow-private"}

// errLoaded stops the command once its settings are loaded and checked.
var errLoaded = errors.New("settings loaded")

// loadServe runs cmkd with args and exactly the CMK_* variables of env, up
// to the hooks (after every setting is applied and validated and the
// secrets are read), and returns the service configuration it built.
func loadServe(t *testing.T, args []string, env map[string]string) (service.Config, error) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "CMK_") {
			t.Setenv(name, "") // an empty variable counts as unset
		}
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	var got service.Config
	cmd := New("cmkd", func(_ *cobra.Command, cfg *service.Config) error {
		got = *cfg
		return errLoaded
	})
	cmd.SetArgs(args)
	cmd.SetOut(io.Discard)
	cmd.SetErr(io.Discard)
	if err := cmd.Execute(); !errors.Is(err, errLoaded) {
		return got, err
	}
	return got, nil
}

// checkArgs checks that every --flag in args is a flag of cmkd and not a
// development switch, and returns the value of --config.
func checkArgs(t *testing.T, where string, args []string) (configFile string) {
	t.Helper()
	_, fs := envNames()
	for i, a := range args {
		name, ok := strings.CutPrefix(a, "--")
		if !ok {
			continue
		}
		name, val, hasVal := strings.Cut(name, "=")
		if fs.Lookup(name) == nil {
			t.Errorf("%s passes --%s, which is not a flag of cmkd", where, name)
		}
		if slices.Contains(devSwitches, name) {
			t.Errorf("%s turns on the development switch --%s", where, name)
		}
		if name == "config" {
			if !hasVal && i+1 < len(args) {
				val = args[i+1]
			}
			configFile = val
		}
	}
	return configFile
}

// checkEnv checks that every CMK_* variable is read by a setting.
func checkEnv(t *testing.T, where string, env map[string]string) {
	t.Helper()
	names, _ := envNames()
	for k := range env {
		if !strings.HasPrefix(k, "CMK_") {
			continue
		}
		if _, ok := names[k]; !ok {
			t.Errorf("%s sets %s, which no setting of cmkd reads", where, k)
		}
	}
}

// readSettingsFile reads a configuration file as JSON: its keys are then
// checked by the real loader, with its file paths replaced by local files.
func readSettingsFile(t *testing.T, file string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return m
}

// localCopy writes settings to a temporary file, each file setting pointing
// at a local stand-in (mode 0600) for the file the deployment provides,
// and returns the file's path.
func localCopy(t *testing.T, settings map[string]any) string {
	t.Helper()
	dir := t.TempDir()
	local := map[string]any{}
	for k, v := range settings {
		local[k] = v
	}
	for _, k := range fileSettings {
		if _, ok := local[k]; !ok {
			continue
		}
		content := strings.Repeat("x", 48) // a token or a secret
		if k == "system-key" {
			content = strings.Repeat("k", 32) // a system key is 32 bytes
		}
		p := filepath.Join(dir, k)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		local[k] = p
	}
	b, err := json.Marshal(local)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "cmk.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	return n
}

// TestSystemdUnit: deploy/systemd/cmkd.service starts cmkd with flags,
// variables and the settings file cmk.json that cmkd accepts, and gives it
// time to drain.
func TestSystemdUnit(t *testing.T) {
	unit := parseUnit(t, filepath.Join(deployDir, "systemd", "cmkd.service"))
	svc := unit["Service"]
	if len(svc["ExecStart"]) != 1 {
		t.Fatalf("the unit has %d ExecStart lines, want 1", len(svc["ExecStart"]))
	}
	argv := strings.Fields(svc["ExecStart"][0])
	if path.Base(argv[0]) != "cmkd" {
		t.Errorf("ExecStart runs %s, want cmkd", argv[0])
	}
	configFile := checkArgs(t, "the systemd unit", argv[1:])
	if configFile != "/etc/cmk/cmk.json" {
		t.Fatalf("the systemd unit reads its settings from %q, want /etc/cmk/cmk.json (deploy/systemd/cmk.json)", configFile)
	}
	env := map[string]string{}
	for _, e := range svc["Environment"] {
		k, v, ok := strings.Cut(e, "=")
		if !ok {
			t.Errorf("Environment=%s is not NAME=value", e)
		}
		env[k] = v
	}
	checkEnv(t, "the systemd unit", env)
	for k := range env {
		if _, secret := secretEnv()[k]; secret {
			t.Errorf("the systemd unit writes the secret %s in the unit file; name a file with its *-file setting", k)
		}
	}

	settings := readSettingsFile(t, filepath.Join(deployDir, "systemd", "cmk.json"))
	args := slices.Clone(argv[1:])
	for i, a := range args {
		if a == "--config" {
			args[i+1] = localCopy(t, settings)
		}
	}
	cfg, err := loadServe(t, args, env)
	if err != nil {
		t.Fatalf("cmkd refuses the systemd unit's settings: %v", err)
	}
	if cfg.DataDir != "/var/lib/cmk" || !slices.Contains(svc["StateDirectory"], "cmk") || !slices.Contains(svc["ReadWritePaths"], cfg.DataDir) {
		t.Errorf("data-dir = %q, StateDirectory = %v, ReadWritePaths = %v: want /var/lib/cmk, its state directory and writable",
			cfg.DataDir, svc["StateDirectory"], svc["ReadWritePaths"])
	}
	stop, err := strconv.Atoi(last(svc["TimeoutStopSec"]))
	if err != nil {
		t.Fatalf("TimeoutStopSec = %v: %v", svc["TimeoutStopSec"], err)
	}
	if time.Duration(stop)*time.Second <= cfg.ShutdownTimeout {
		t.Errorf("TimeoutStopSec = %d s, not above shutdown-timeout %s: systemd would kill cmkd in its drain", stop, cfg.ShutdownTimeout)
	}
	if last(svc["KillSignal"]) != "SIGTERM" {
		t.Errorf("KillSignal = %v, want SIGTERM (which starts the drain)", svc["KillSignal"])
	}
	if last(svc["User"]) == "" || last(svc["User"]) == "root" {
		t.Errorf("User = %v, want a user of its own", svc["User"])
	}
}

// systemdDirectives are the directives the unit may use: anything else is
// a typo that systemd would only warn about.
var systemdDirectives = map[string][]string{
	"Unit": {"Description", "Documentation", "After", "Wants", "Requires"},
	"Service": {"Type", "User", "Group", "ExecStart", "Environment", "KillSignal", "KillMode", "TimeoutStopSec",
		"Restart", "RestartSec", "StateDirectory", "StateDirectoryMode", "UMask", "NoNewPrivileges", "ProtectSystem",
		"ProtectHome", "PrivateTmp", "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
		"ProtectControlGroups", "RestrictAddressFamilies", "RestrictNamespaces", "LockPersonality",
		"MemoryDenyWriteExecute", "CapabilityBoundingSet", "ReadWritePaths", "LimitNOFILE"},
	"Install": {"WantedBy"},
}

// parseUnit reads a systemd unit: section → directive → values.
func parseUnit(t *testing.T, file string) map[string]map[string][]string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	unit := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || line[0] == '#' || line[0] == ';':
		case line[0] == '[' && line[len(line)-1] == ']':
			section = line[1 : len(line)-1]
			if _, ok := systemdDirectives[section]; !ok {
				t.Errorf("%s:%d: unexpected section [%s]", file, n, section)
			}
			unit[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Errorf("%s:%d: %q is not a directive of a section", file, n, line)
				continue
			}
			if !slices.Contains(systemdDirectives[section], k) {
				t.Errorf("%s:%d: unknown directive %s in [%s]", file, n, k, section)
			}
			unit[section][k] = append(unit[section][k], v)
		}
	}
	return unit
}

func last(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	return vs[len(vs)-1]
}

func secretEnv() map[string]bool {
	m := map[string]bool{}
	for _, s := range Secrets {
		m[s.Env] = true
	}
	return m
}

// The Kubernetes objects, with only the fields deploy/kubernetes uses: a
// strict decode refuses any other, so a misspelt field fails here rather
// than being dropped by the API server.
type (
	objectMeta struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	}
	labelSelector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	}
	kustomization struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Labels     []struct {
			Pairs map[string]string `yaml:"pairs"`
		} `yaml:"labels"`
		Resources          []string `yaml:"resources"`
		ConfigMapGenerator []struct {
			Name  string   `yaml:"name"`
			Files []string `yaml:"files"`
		} `yaml:"configMapGenerator"`
	}
	deployment struct {
		APIVersion string     `yaml:"apiVersion"`
		Kind       string     `yaml:"kind"`
		Metadata   objectMeta `yaml:"metadata"`
		Spec       struct {
			Replicas             int `yaml:"replicas"`
			RevisionHistoryLimit int `yaml:"revisionHistoryLimit"`
			Strategy             struct {
				Type          string `yaml:"type"`
				RollingUpdate struct {
					MaxUnavailable int `yaml:"maxUnavailable"`
					MaxSurge       int `yaml:"maxSurge"`
				} `yaml:"rollingUpdate"`
			} `yaml:"strategy"`
			Selector labelSelector `yaml:"selector"`
			Template struct {
				Metadata objectMeta `yaml:"metadata"`
				Spec     podSpec    `yaml:"spec"`
			} `yaml:"template"`
		} `yaml:"spec"`
	}
	podSpec struct {
		TerminationGracePeriodSeconds int   `yaml:"terminationGracePeriodSeconds"`
		AutomountServiceAccountToken  *bool `yaml:"automountServiceAccountToken"`
		EnableServiceLinks            *bool `yaml:"enableServiceLinks"`
		SecurityContext               struct {
			RunAsNonRoot   bool `yaml:"runAsNonRoot"`
			RunAsUser      int  `yaml:"runAsUser"`
			RunAsGroup     int  `yaml:"runAsGroup"`
			FSGroup        int  `yaml:"fsGroup"`
			SeccompProfile struct {
				Type string `yaml:"type"`
			} `yaml:"seccompProfile"`
		} `yaml:"securityContext"`
		TopologySpreadConstraints []struct {
			MaxSkew           int           `yaml:"maxSkew"`
			TopologyKey       string        `yaml:"topologyKey"`
			WhenUnsatisfiable string        `yaml:"whenUnsatisfiable"`
			LabelSelector     labelSelector `yaml:"labelSelector"`
		} `yaml:"topologySpreadConstraints"`
		InitContainers []container `yaml:"initContainers"`
		Containers     []container `yaml:"containers"`
		Volumes        []volume    `yaml:"volumes"`
	}
	container struct {
		Name    string   `yaml:"name"`
		Image   string   `yaml:"image"`
		Command []string `yaml:"command"`
		Args    []string `yaml:"args"`
		Env     []struct {
			Name      string `yaml:"name"`
			Value     string `yaml:"value"`
			ValueFrom *struct {
				SecretKeyRef *struct {
					Name string `yaml:"name"`
					Key  string `yaml:"key"`
				} `yaml:"secretKeyRef"`
				ResourceFieldRef *struct {
					Resource string `yaml:"resource"`
					Divisor  string `yaml:"divisor"`
				} `yaml:"resourceFieldRef"`
			} `yaml:"valueFrom"`
		} `yaml:"env"`
		Ports []struct {
			Name          string `yaml:"name"`
			ContainerPort int    `yaml:"containerPort"`
			Protocol      string `yaml:"protocol"`
		} `yaml:"ports"`
		StartupProbe   *probe `yaml:"startupProbe"`
		LivenessProbe  *probe `yaml:"livenessProbe"`
		ReadinessProbe *probe `yaml:"readinessProbe"`
		Lifecycle      *struct {
			PreStop *struct {
				Sleep *struct {
					Seconds int `yaml:"seconds"`
				} `yaml:"sleep"`
			} `yaml:"preStop"`
		} `yaml:"lifecycle"`
		Resources struct {
			Requests map[string]string `yaml:"requests"`
			Limits   map[string]string `yaml:"limits"`
		} `yaml:"resources"`
		SecurityContext struct {
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
			Capabilities             struct {
				Drop []string `yaml:"drop"`
			} `yaml:"capabilities"`
		} `yaml:"securityContext"`
		VolumeMounts []volumeMount `yaml:"volumeMounts"`
	}
	probe struct {
		HTTPGet *struct {
			Path string `yaml:"path"`
			Port string `yaml:"port"` // a number or a port's name
		} `yaml:"httpGet"`
		PeriodSeconds    int `yaml:"periodSeconds"`
		TimeoutSeconds   int `yaml:"timeoutSeconds"`
		FailureThreshold int `yaml:"failureThreshold"`
	}
	volumeMount struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		SubPath   string `yaml:"subPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	}
	volume struct {
		Name      string `yaml:"name"`
		ConfigMap *struct {
			Name string `yaml:"name"`
		} `yaml:"configMap"`
		Secret *struct {
			SecretName  string `yaml:"secretName"`
			DefaultMode *int   `yaml:"defaultMode"`
			Items       []struct {
				Key  string `yaml:"key"`
				Path string `yaml:"path"`
			} `yaml:"items"`
		} `yaml:"secret"`
		EmptyDir *struct {
			Medium    string `yaml:"medium"`
			SizeLimit string `yaml:"sizeLimit"`
		} `yaml:"emptyDir"`
	}
	k8sService struct {
		APIVersion string     `yaml:"apiVersion"`
		Kind       string     `yaml:"kind"`
		Metadata   objectMeta `yaml:"metadata"`
		Spec       struct {
			Type     string            `yaml:"type"`
			Selector map[string]string `yaml:"selector"`
			Ports    []struct {
				Name       string `yaml:"name"`
				Port       int    `yaml:"port"`
				TargetPort string `yaml:"targetPort"`
				Protocol   string `yaml:"protocol"`
			} `yaml:"ports"`
		} `yaml:"spec"`
	}
	podDisruptionBudget struct {
		APIVersion string     `yaml:"apiVersion"`
		Kind       string     `yaml:"kind"`
		Metadata   objectMeta `yaml:"metadata"`
		Spec       struct {
			MaxUnavailable *int          `yaml:"maxUnavailable"`
			Selector       labelSelector `yaml:"selector"`
		} `yaml:"spec"`
	}
	networkPeer struct {
		NamespaceSelector *labelSelector `yaml:"namespaceSelector"`
		PodSelector       *labelSelector `yaml:"podSelector"`
		IPBlock           *struct {
			CIDR   string   `yaml:"cidr"`
			Except []string `yaml:"except"`
		} `yaml:"ipBlock"`
	}
	networkPort struct {
		Port     string `yaml:"port"` // a number or a port's name
		Protocol string `yaml:"protocol"`
	}
	networkPolicy struct {
		APIVersion string     `yaml:"apiVersion"`
		Kind       string     `yaml:"kind"`
		Metadata   objectMeta `yaml:"metadata"`
		Spec       struct {
			PodSelector labelSelector `yaml:"podSelector"`
			PolicyTypes []string      `yaml:"policyTypes"`
			Ingress     []struct {
				From  []networkPeer `yaml:"from"`
				Ports []networkPort `yaml:"ports"`
			} `yaml:"ingress"`
			Egress []struct {
				To    []networkPeer `yaml:"to"`
				Ports []networkPort `yaml:"ports"`
			} `yaml:"egress"`
		} `yaml:"spec"`
	}
)

// decodeStrict decodes the one YAML document of file into out, refusing
// fields out does not have, and returns its kind.
func decodeStrict(t *testing.T, file string, out any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(out); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var more any
	if err := dec.Decode(&more); err != io.EOF {
		t.Fatalf("%s holds more than one document (or junk after it): %v", file, err)
	}
}

// kubeManifests are deploy/kubernetes, decoded.
type kubeManifests struct {
	kust     kustomization
	deploy   deployment
	api, op  k8sService
	pdb      podDisruptionBudget
	netpol   networkPolicy
	settings map[string]any // the ConfigMap's cmk.json
}

func readKube(t *testing.T) kubeManifests {
	t.Helper()
	dir := filepath.Join(deployDir, "kubernetes")
	var m kubeManifests
	decodeStrict(t, filepath.Join(dir, "kustomization.yaml"), &m.kust)
	if m.kust.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml is a %q", m.kust.Kind)
	}
	// Every manifest is a resource, and every resource a manifest of a
	// known kind.
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if n := e.Name(); strings.HasSuffix(n, ".yaml") && n != "kustomization.yaml" && !slices.Contains(m.kust.Resources, n) {
			t.Errorf("deploy/kubernetes/%s is not in kustomization.yaml's resources", n)
		}
	}
	for _, r := range m.kust.Resources {
		var head struct {
			APIVersion string `yaml:"apiVersion"`
			Kind       string `yaml:"kind"`
		}
		b, err := os.ReadFile(filepath.Join(dir, r))
		if err != nil {
			t.Fatalf("kustomization.yaml lists %s: %v", r, err)
		}
		if err := yaml.Unmarshal(b, &head); err != nil {
			t.Fatalf("%s: %v", r, err)
		}
		var out any
		var want string
		switch head.Kind {
		case "Deployment":
			out, want = &m.deploy, "apps/v1"
		case "Service":
			if m.api.Kind == "" {
				out = &m.api
			} else {
				out = &m.op
			}
			want = "v1"
		case "PodDisruptionBudget":
			out, want = &m.pdb, "policy/v1"
		case "NetworkPolicy":
			out, want = &m.netpol, "networking.k8s.io/v1"
		default:
			t.Fatalf("%s is a %q, which this test does not know", r, head.Kind)
		}
		if head.APIVersion != want {
			t.Errorf("%s: apiVersion %q, want %q", r, head.APIVersion, want)
		}
		decodeStrict(t, filepath.Join(dir, r), out)
	}
	if m.op.Spec.Ports == nil || m.api.Spec.Ports == nil {
		t.Fatal("want two Services, the API's and the operator listener's")
	}
	if m.api.Spec.Ports[0].TargetPort == "operator" { // order of the resources
		m.api, m.op = m.op, m.api
	}
	if len(m.kust.ConfigMapGenerator) != 1 || len(m.kust.ConfigMapGenerator[0].Files) != 1 {
		t.Fatalf("kustomization.yaml: want one configMapGenerator with one file, got %+v", m.kust.ConfigMapGenerator)
	}
	m.settings = readSettingsFile(t, filepath.Join(dir, m.kust.ConfigMapGenerator[0].Files[0]))
	return m
}

// selects reports whether the selector is non-empty and matches labels.
func selects(sel, labels map[string]string) bool {
	if len(sel) == 0 {
		return false
	}
	for k, v := range sel {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// TestKubernetesManifests: deploy/kubernetes runs cmkd with settings it
// accepts, probes the paths and ports it serves them on, selects its pods
// everywhere, keeps its secrets in files only cmkd can read, and gives it
// the time to drain.
func TestKubernetesManifests(t *testing.T) {
	m := readKube(t)
	pod := m.deploy.Spec.Template.Spec
	podLabels := m.deploy.Spec.Template.Metadata.Labels

	// Selectors.
	if !selects(m.deploy.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("the Deployment's selector %v does not select its pods %v", m.deploy.Spec.Selector.MatchLabels, podLabels)
	}
	for _, s := range []k8sService{m.api, m.op} {
		if !selects(s.Spec.Selector, podLabels) {
			t.Errorf("Service %s selects %v, not the pods %v", s.Metadata.Name, s.Spec.Selector, podLabels)
		}
	}
	if !selects(m.pdb.Spec.Selector.MatchLabels, podLabels) {
		t.Errorf("the PodDisruptionBudget selects %v, not the pods %v", m.pdb.Spec.Selector.MatchLabels, podLabels)
	}
	if !selects(m.netpol.Spec.PodSelector.MatchLabels, podLabels) {
		t.Errorf("the NetworkPolicy applies to %v, not the pods %v", m.netpol.Spec.PodSelector.MatchLabels, podLabels)
	}
	if m.deploy.Spec.Replicas != 3 {
		t.Errorf("replicas = %d, want 3", m.deploy.Spec.Replicas)
	}
	if mu := m.pdb.Spec.MaxUnavailable; mu == nil || *mu != 1 {
		t.Errorf("the PodDisruptionBudget's maxUnavailable is not 1 (%s)", pdbText(mu))
	}

	// The container, its flags and variables.
	if len(pod.Containers) != 1 {
		t.Fatalf("the pod has %d containers, want cmkd alone", len(pod.Containers))
	}
	c := pod.Containers[0]
	configFile := checkArgs(t, "the Deployment", c.Args)
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			env[e.Name] = "postgres://cmk@db.example/cmk?sslmode=verify-full" // the Secret's DSNs
		case e.ValueFrom != nil:
			env[e.Name] = "1"
		default:
			env[e.Name] = e.Value
			if secretEnv()[e.Name] || strings.HasSuffix(e.Name, "_DSN") {
				t.Errorf("the Deployment writes %s in the manifest; take it from the Secret", e.Name)
			}
		}
	}
	checkEnv(t, "the Deployment", env)
	if !pod.SecurityContext.RunAsNonRoot || !c.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("cmkd runs as root or on a writable root file system")
	}

	// Mounts: where a path in the container comes from.
	mounts := map[string]volume{} // mount path → volume
	volumes := map[string]volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, vm := range c.VolumeMounts {
		v, ok := volumes[vm.Name]
		if !ok {
			t.Fatalf("cmkd mounts %s, which is not a volume", vm.Name)
		}
		mounts[vm.MountPath] = v
	}
	mountOf := func(p string) (string, volume, bool) {
		for dir, v := range mounts {
			if p == dir || strings.HasPrefix(p, dir+"/") {
				return dir, v, true
			}
		}
		return "", volume{}, false
	}

	// The settings file is the generated ConfigMap, mounted where --config
	// says.
	_, cv, ok := mountOf(configFile)
	if !ok || cv.ConfigMap == nil || cv.ConfigMap.Name != m.kust.ConfigMapGenerator[0].Name {
		t.Errorf("--config=%s is not the ConfigMap %s", configFile, m.kust.ConfigMapGenerator[0].Name)
	}

	// Every file setting names a file only cmkd's user can read: copied by
	// an init container with mode 0600 from the Secret.
	for _, k := range fileSettings {
		p, ok := m.settings[k].(string)
		if !ok {
			continue
		}
		_, v, ok := mountOf(p)
		if !ok {
			t.Errorf("%s = %s is in no volume of cmkd", k, p)
			continue
		}
		if v.EmptyDir == nil || v.EmptyDir.Medium != "Memory" {
			t.Errorf("%s = %s: want it in a memory emptyDir, filled by the init container", k, p)
			continue
		}
		if !copiedFromSecret(pod, v.Name, path.Base(p)) {
			t.Errorf("%s = %s: no init container copies %s into %s with mode 0600 from a Secret key", k, p, path.Base(p), v.Name)
		}
	}

	// The settings, loaded by cmkd itself.
	args := slices.Clone(c.Args)
	for i, a := range args {
		if strings.HasPrefix(a, "--config=") {
			args[i] = "--config=" + localCopy(t, m.settings)
		}
	}
	cfg, err := loadServe(t, args, env)
	if err != nil {
		t.Fatalf("cmkd refuses the Deployment's settings: %v", err)
	}
	// Replicas share everything: no state of their own.
	if cfg.DatabaseDSN == "" || cfg.ProfilesDSN == "" || cfg.LakeAzure == nil || cfg.SystemKeyFile == "" {
		t.Errorf("replicas must share the state database, the profile database, the lake and the system key: database %t, profiles-postgres %t, lake-azure-url %t, system-key %q",
			cfg.DatabaseDSN != "", cfg.ProfilesDSN != "", cfg.LakeAzure != nil, cfg.SystemKeyFile)
	}
	if cfg.OperatorAddr == "" {
		t.Fatal("the Deployment has no operator listener")
	}
	// cmkd refuses a data directory it does not own, and a volume's root
	// belongs to root: the data directory is one cmkd makes inside it.
	if dir, v, ok := mountOf(cfg.DataDir); !ok || dir == cfg.DataDir || v.EmptyDir == nil {
		t.Errorf("data-dir = %s: want a directory inside an emptyDir volume (not its root, which root owns)", cfg.DataDir)
	}

	// Ports: the probes, the Services and the NetworkPolicy use the ports
	// cmkd listens on.
	portNamed := map[string]int{}
	for _, p := range c.Ports {
		portNamed[p.Name] = p.ContainerPort
	}
	resolve := func(p string) int {
		if n, err := strconv.Atoi(p); err == nil {
			return n
		}
		n, ok := portNamed[p]
		if !ok {
			t.Errorf("port %q is not a port of cmkd", p)
		}
		return n
	}
	apiPort, opPort := port(t, cfg.Addr), port(t, cfg.OperatorAddr)
	if portNamed["http"] != apiPort || portNamed["operator"] != opPort {
		t.Errorf("cmkd's ports are %v; it listens on %d (addr) and %d (operator-addr)", portNamed, apiPort, opPort)
	}
	for _, pr := range []struct {
		name  string
		probe *probe
		route cmkapi.Route
	}{
		{"startupProbe", c.StartupProbe, cmkapi.Livez},
		{"livenessProbe", c.LivenessProbe, cmkapi.Livez},
		{"readinessProbe", c.ReadinessProbe, cmkapi.Readyz},
	} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("cmkd has no %s over HTTP", pr.name)
			continue
		}
		if g := pr.probe.HTTPGet; g.Path != pr.route.Path || resolve(g.Port) != apiPort {
			t.Errorf("%s = GET %s on port %s, want GET %s on %d", pr.name, g.Path, g.Port, pr.route.Path, apiPort)
		}
	}
	if p := m.api.Spec.Ports; len(p) != 1 || resolve(p[0].TargetPort) != apiPort {
		t.Errorf("Service %s ports %+v, want one to %d", m.api.Metadata.Name, p, apiPort)
	}
	if p := m.op.Spec.Ports; len(p) != 1 || resolve(p[0].TargetPort) != opPort {
		t.Errorf("Service %s ports %+v, want one to %d", m.op.Metadata.Name, p, opPort)
	}
	// Whoever reaches the API must not reach the operator listener.
	apiPeers, opPeers := map[string]bool{}, map[string]bool{}
	for _, rule := range m.netpol.Spec.Ingress {
		if len(rule.From) == 0 {
			t.Errorf("a NetworkPolicy ingress rule admits everyone")
		}
		for _, p := range rule.Ports {
			for _, peer := range rule.From {
				key, _ := json.Marshal(peer)
				switch resolve(p.Port) {
				case apiPort:
					apiPeers[string(key)] = true
				case opPort:
					opPeers[string(key)] = true
				default:
					t.Errorf("the NetworkPolicy opens port %s, where cmkd does not listen", p.Port)
				}
			}
		}
	}
	if len(apiPeers) == 0 || len(opPeers) == 0 {
		t.Errorf("the NetworkPolicy admits no one to the API (%d) or to the operator listener (%d)", len(apiPeers), len(opPeers))
	}
	for p := range opPeers {
		if apiPeers[p] {
			t.Errorf("the NetworkPolicy admits %s to both the API and the operator listener", p)
		}
	}

	// Shutdown: the grace period covers the preStop sleep and the drain.
	preStop := 0
	if c.Lifecycle != nil && c.Lifecycle.PreStop != nil && c.Lifecycle.PreStop.Sleep != nil {
		preStop = c.Lifecycle.PreStop.Sleep.Seconds
	}
	if preStop == 0 {
		t.Errorf("cmkd has no preStop sleep: the Service may send requests to a pod that stopped accepting them")
	}
	if grace := time.Duration(pod.TerminationGracePeriodSeconds) * time.Second; grace < time.Duration(preStop)*time.Second+cfg.ShutdownTimeout {
		t.Errorf("terminationGracePeriodSeconds %s < preStop %d s + shutdown-timeout %s", grace, preStop, cfg.ShutdownTimeout)
	}
}

func pdbText(n *int) string {
	if n == nil {
		return "unset"
	}
	return strconv.Itoa(*n)
}

// copiedFromSecret reports whether an init container copies a Secret's key
// into the volume named dst, as file name, with mode 0600.
func copiedFromSecret(pod podSpec, dst, name string) bool {
	volumes := map[string]volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, ic := range pod.InitContainers {
		if len(ic.Command) < 4 || ic.Command[0] != "install" || ic.Command[1] != "-m" || ic.Command[2] != "0600" {
			continue
		}
		srcs, target := ic.Command[3:len(ic.Command)-1], ic.Command[len(ic.Command)-1]
		var fromSecret, toDst bool
		for _, vm := range ic.VolumeMounts {
			v := volumes[vm.Name]
			if v.Name == dst && strings.TrimSuffix(target, "/") == vm.MountPath {
				toDst = true
			}
			if v.Secret == nil {
				continue
			}
			for _, it := range v.Secret.Items {
				if slices.Contains(srcs, vm.MountPath+"/"+it.Path) && it.Path == name {
					fromSecret = v.Secret.DefaultMode != nil && *v.Secret.DefaultMode&0o007 == 0
				}
			}
		}
		if fromSecret && toDst {
			return true
		}
	}
	return false
}

// TestOperationsDeploymentFiles: docs/operations.md's "Deployment files"
// names every file in deploy/systemd and deploy/kubernetes, and its command
// that creates the Secret gives it exactly the keys the Deployment reads.
func TestOperationsDeploymentFiles(t *testing.T) {
	d := readOperationsDoc(t)
	start := strings.Index(d.text, "## Deployment files\n")
	if start < 0 {
		t.Fatal(`docs/operations.md has no "## Deployment files" section`)
	}
	section := d.text[start:]
	if end := strings.Index(section[1:], "\n## "); end >= 0 {
		section = section[:end+1]
	}
	for _, dir := range []string{"systemd", "kubernetes"} {
		entries, err := os.ReadDir(filepath.Join(deployDir, dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if p := "deploy/" + dir + "/" + e.Name(); !strings.Contains(section, "`"+p+"`") {
				t.Errorf(`docs/operations.md's "Deployment files" does not name %s`, p)
			}
		}
	}

	// The Secret's keys, as the Deployment reads them.
	m := readKube(t)
	want, secretName := map[string]bool{}, ""
	pod := m.deploy.Spec.Template.Spec
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			secretName = v.Secret.SecretName
			for _, it := range v.Secret.Items {
				want[it.Key] = true
			}
		}
	}
	for _, c := range pod.Containers {
		for _, e := range c.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				if e.ValueFrom.SecretKeyRef.Name != secretName {
					t.Errorf("%s comes from the Secret %s, the files from %s: want one Secret", e.Name, e.ValueFrom.SecretKeyRef.Name, secretName)
				}
				want[e.ValueFrom.SecretKeyRef.Key] = true
			}
		}
	}
	var cmd string
	for _, b := range d.blocks["sh"] {
		if strings.Contains(b, "kubectl create secret generic") {
			cmd = strings.ReplaceAll(b, "\\\n", " ")
		}
	}
	if cmd == "" {
		t.Fatal("docs/operations.md has no kubectl create secret generic command")
	}
	got := map[string]bool{}
	words := strings.Fields(cmd[strings.Index(cmd, "kubectl create secret generic"):])
	if words[4] != secretName {
		t.Errorf("the docs create the Secret %s, the Deployment reads %s", words[4], secretName)
	}
	for _, w := range words[5:] {
		if v, ok := strings.CutPrefix(w, "--from-file="); ok {
			got[path.Base(v)] = true
		}
		if v, ok := strings.CutPrefix(w, "--from-literal="); ok {
			k, _, _ := strings.Cut(v, "=")
			got[k] = true
		}
	}
	for k := range want {
		if !got[k] {
			t.Errorf("the docs' Secret lacks the key %s, which the Deployment reads", k)
		}
	}
	for k := range got {
		if !want[k] {
			t.Errorf("the docs' Secret has the key %s, which the Deployment does not read", k)
		}
	}
}
