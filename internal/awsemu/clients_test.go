package awsemu_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cmk-project/cmk/internal/awsemu"
)

// requireServers reports whether a missing client must fail the test
// rather than skip it (as in CI).
func requireServers() bool {
	return os.Getenv("CI") != "" || os.Getenv("CMK_REQUIRE_SERVERS") == "1"
}

func missing(t *testing.T, what string) {
	t.Helper()
	if requireServers() {
		t.Fatalf("%s is required (CI or CMK_REQUIRE_SERVERS=1 is set) but was not found.\n"+
			"To fix: run scripts/install-awscli.sh (installs Debian's awscli and python3-boto3).", what)
	}
	t.Skipf("SKIPPED: %s not found; run scripts/install-awscli.sh", what)
}

// clientEnv is the environment of a client process: the credentials and
// Region only, no shared config, no instance metadata.
func clientEnv(t *testing.T, c awsemu.Credentials) []string {
	dir := t.TempDir()
	env := []string{
		"HOME=" + dir, "PATH=" + os.Getenv("PATH"),
		"AWS_ACCESS_KEY_ID=" + c.AccessKeyID, "AWS_SECRET_ACCESS_KEY=" + c.SecretAccessKey,
		"AWS_DEFAULT_REGION=" + awsemu.DefaultRegion, "AWS_REGION=" + awsemu.DefaultRegion,
		"AWS_CONFIG_FILE=" + filepath.Join(dir, "config"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(dir, "credentials"),
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=",
	}
	for _, v := range []string{"PYENV_ROOT", "PYENV_VERSION", "PYTHONPATH"} {
		if s, ok := os.LookupEnv(v); ok {
			env = append(env, v+"="+s)
		}
	}
	return env
}

// otherAccountKey makes a key in account B that account A may not use.
func otherAccountKey(t *testing.T, w *world) string {
	t.Helper()
	info, err := w.emu.CreateKey(acctB, awsemu.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return info.ARN
}

func TestAWSCLI(t *testing.T) {
	bin := awsCLI()
	if bin == "" {
		missing(t, "awscli (the aws command)")
	}
	w := newWorld(t)
	other := otherAccountKey(t, w)
	env := clientEnv(t, w.alice)
	dir := t.TempDir()
	aws := func(args ...string) (string, string, error) {
		t.Helper()
		cx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(cx, bin, append([]string{"kms"}, append(args, "--endpoint-url", w.url, "--output", "json")...)...)
		cmd.Env = env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		return out.String(), errb.String(), err
	}
	ok := func(args ...string) map[string]any {
		t.Helper()
		out, stderr, err := aws(args...)
		if err != nil {
			t.Fatalf("aws kms %s: %v\n%s", strings.Join(args, " "), err, stderr)
		}
		var m map[string]any
		if strings.TrimSpace(out) != "" {
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				t.Fatalf("aws kms %s printed %q: %v", args[0], out, err)
			}
		}
		return m
	}
	fails := func(code string, args ...string) {
		t.Helper()
		_, stderr, err := aws(args...)
		if err == nil || !strings.Contains(stderr, "("+code+")") {
			t.Fatalf("aws kms %s: err %v, stderr %q; want an error (%s)", strings.Join(args, " "), err, stderr, code)
		}
	}

	md := ok("create-key", "--description", "from awscli")["KeyMetadata"].(map[string]any)
	arn := md["Arn"].(string)
	if md["KeySpec"] != "SYMMETRIC_DEFAULT" || md["KeyState"] != "Enabled" || !strings.HasPrefix(arn, "arn:aws:kms:us-east-1:"+acctA+":key/") {
		t.Fatalf("create-key = %v", md)
	}
	if got := ok("describe-key", "--key-id", arn)["KeyMetadata"].(map[string]any)["KeyId"]; got != md["KeyId"] {
		t.Fatalf("describe-key KeyId = %v, want %v", got, md["KeyId"])
	}
	pt := filepath.Join(dir, "pt")
	if err := os.WriteFile(pt, []byte("data key"), 0o600); err != nil {
		t.Fatal(err)
	}
	enc := ok("encrypt", "--key-id", arn, "--plaintext", "fileb://"+pt, "--encryption-context", "cmk:org=org-a")
	blob, err := base64.StdEncoding.DecodeString(enc["CiphertextBlob"].(string))
	if err != nil {
		t.Fatal(err)
	}
	blobFile := filepath.Join(dir, "blob")
	if err := os.WriteFile(blobFile, blob, 0o600); err != nil {
		t.Fatal(err)
	}
	dec := ok("decrypt", "--ciphertext-blob", "fileb://"+blobFile, "--encryption-context", "cmk:org=org-a")
	if p, _ := base64.StdEncoding.DecodeString(dec["Plaintext"].(string)); string(p) != "data key" || dec["KeyId"] != arn {
		t.Fatalf("decrypt = %v", dec)
	}
	fails("InvalidCiphertextException", "decrypt", "--ciphertext-blob", "fileb://"+blobFile, "--encryption-context", "cmk:org=org-b")

	ok("create-alias", "--alias-name", "alias/cli", "--target-key-id", md["KeyId"].(string))
	if al := ok("list-aliases")["Aliases"].([]any); len(al) != 1 {
		t.Fatalf("list-aliases = %v", al)
	}
	if ks := ok("list-keys")["Keys"].([]any); len(ks) != 1 {
		t.Fatalf("list-keys = %v", ks)
	}
	ok("enable-key-rotation", "--key-id", arn)
	if st := ok("get-key-rotation-status", "--key-id", arn); st["KeyRotationEnabled"] != true {
		t.Fatalf("get-key-rotation-status = %v", st)
	}
	ok("rotate-key-on-demand", "--key-id", arn)
	if rs := ok("list-key-rotations", "--key-id", arn)["Rotations"].([]any); len(rs) != 1 {
		t.Fatalf("list-key-rotations = %v", rs)
	}
	ok("decrypt", "--ciphertext-blob", "fileb://"+blobFile, "--encryption-context", "cmk:org=org-a")
	ok("disable-key-rotation", "--key-id", arn)
	pol := ok("get-key-policy", "--key-id", arn, "--policy-name", "default")["Policy"].(string)
	ok("put-key-policy", "--key-id", arn, "--policy-name", "default", "--policy", pol)

	ok("disable-key", "--key-id", arn)
	fails("DisabledException", "encrypt", "--key-id", arn, "--plaintext", "fileb://"+pt)
	ok("enable-key", "--key-id", arn)
	if s := ok("schedule-key-deletion", "--key-id", arn, "--pending-window-in-days", "7"); s["KeyState"] != "PendingDeletion" {
		t.Fatalf("schedule-key-deletion = %v", s)
	}
	fails("KMSInvalidStateException", "encrypt", "--key-id", arn, "--plaintext", "fileb://"+pt)
	fails("ValidationException", "schedule-key-deletion", "--key-id", md["KeyId"].(string), "--pending-window-in-days", "31")
	ok("cancel-key-deletion", "--key-id", arn)

	fails("AccessDeniedException", "encrypt", "--key-id", other, "--plaintext", "fileb://"+pt)
	fails("NotFoundException", "describe-key", "--key-id", "alias/missing")

	env = clientEnv(t, awsemu.Credentials{AccessKeyID: w.alice.AccessKeyID, SecretAccessKey: strings.Repeat("x", 40)})
	fails("InvalidSignatureException", "list-keys")
	env = clientEnv(t, awsemu.Credentials{AccessKeyID: "AKIAUNKNOWNUNKNOWN00", SecretAccessKey: w.alice.SecretAccessKey})
	fails("UnrecognizedClientException", "list-keys")
}

func TestBoto3(t *testing.T) {
	py := boto3Python()
	if py == "" {
		missing(t, "boto3 (python3 -c 'import boto3')")
	}
	w := newWorld(t)
	other := otherAccountKey(t, w)
	script, err := filepath.Abs("testdata/boto3_kms.py")
	if err != nil {
		t.Fatal(err)
	}
	cx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cx, py, script)
	cmd.Env = append(clientEnv(t, w.alice), "CMK_AWSEMU_ENDPOINT="+w.url, "CMK_AWSEMU_OTHER_KEY="+other)
	out, err := cmd.CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "OK" {
		t.Fatalf("boto3 script: %v\n%s", err, out)
	}
}

// boto3Python is a python3 that imports boto3: the first on PATH, else
// Debian's (a pyenv or virtualenv python3 earlier on PATH hides the one
// python3-boto3 installs into); "" when none does.
func boto3Python() string {
	var cands []string
	if py, err := exec.LookPath("python3"); err == nil {
		cands = append(cands, py)
	}
	cands = append(cands, "/usr/bin/python3")
	for _, py := range cands {
		if exec.Command(py, "-c", "import boto3").Run() == nil {
			return py
		}
	}
	return ""
}

// awsCLI is an aws command that runs: the one on PATH, else Debian's.
func awsCLI() string {
	var cands []string
	if bin, err := exec.LookPath("aws"); err == nil {
		cands = append(cands, bin)
	}
	cands = append(cands, "/usr/bin/aws")
	for _, bin := range cands {
		if exec.Command(bin, "--version").Run() == nil {
			return bin
		}
	}
	return ""
}
