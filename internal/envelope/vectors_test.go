package envelope

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors.json")

const vectorsFile = "testdata/vectors.json"

// vector is one test vector. Every ciphertext is sealed under testDEK and
// testBind; invalid vectors change the ciphertext or what it is opened
// with (dek, key id, binding, kind).
type vector struct {
	Name       string      `json:"name"`
	Kind       string      `json:"kind"` // "record" or "stream": how to open it
	DEK        string      `json:"dek"`  // hex
	Binding    jsonBinding `json:"binding"`
	KeyID      string      `json:"key_id,omitempty"`    // the id in the header, for ok vectors
	Plaintext  string      `json:"plaintext,omitempty"` // hex, for ok vectors
	Ciphertext string      `json:"ciphertext"`          // hex
	Result     string      `json:"result"`              // "ok", "auth" (ErrAuth) or "format" (ErrFormat)
}

type jsonBinding struct {
	Org     string `json:"org"`
	Sandbox string `json:"sandbox"`
	Store   string `json:"store"`
	Object  string `json:"object"`
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	data, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatalf("read vectors (regenerate with go test -run TestVectors -update): %v", err)
	}
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatalf("parse %s: %v", vectorsFile, err)
	}
	return vs
}

func mustHex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex: %v", err)
	}
	return b
}

func TestVectors(t *testing.T) {
	if *update {
		writeVectors(t)
	}
	vs := loadVectors(t)
	results := map[string]int{}
	for _, v := range vs {
		results[v.Result]++
		dek, ct := mustHex(t, v.DEK), mustHex(t, v.Ciphertext)
		b := Binding(v.Binding)
		var pt []byte
		var err error
		switch v.Kind {
		case "record":
			pt, err = OpenRecord(dek, b, ct)
			// The service opens records with a RecordKey prepared for
			// the id it stores the DEK under, in place: it must agree.
			k, kerr := NewRecordKey(dek, testKeyID)
			if kerr != nil {
				t.Fatal(kerr)
			}
			pt2, err2 := k.OpenInPlace(b, bytes.Clone(ct))
			switch {
			case v.Result == "ok" && (err2 != nil || !bytes.Equal(pt2, mustHex(t, v.Plaintext))):
				t.Errorf("%s: RecordKey.OpenInPlace = %v, want the plaintext", v.Name, err2)
			case v.Result != "ok" && !isRejection(err2):
				t.Errorf("%s: RecordKey.OpenInPlace = %v, want a rejection", v.Name, err2)
			}
		case "stream":
			pt, err = openStream(dek, b, ct)
		default:
			t.Fatalf("%s: unknown kind %q", v.Name, v.Kind)
		}
		switch v.Result {
		case "ok":
			if err != nil {
				t.Errorf("%s: open = %v, want success", v.Name, err)
				continue
			}
			if want := mustHex(t, v.Plaintext); !bytes.Equal(pt, want) {
				t.Errorf("%s: plaintext = %x, want %x", v.Name, pt, want)
			}
			if id, err := KeyID(ct); err != nil || id != v.KeyID {
				t.Errorf("%s: KeyID = %q, %v, want %q", v.Name, id, err, v.KeyID)
			}
			// Sealing is deterministic given the salt: this pins the
			// format, not just the round trip.
			if again := resealWithSalt(t, v.Kind, ct, dek, v.KeyID, b, pt); !bytes.Equal(again, ct) {
				t.Errorf("%s: sealing again with the same salt gives a different ciphertext", v.Name)
			}
		case "auth":
			if !errors.Is(err, ErrAuth) {
				t.Errorf("%s: open = %v, want ErrAuth", v.Name, err)
			}
		case "format":
			if !errors.Is(err, ErrFormat) {
				t.Errorf("%s: open = %v, want ErrFormat", v.Name, err)
			}
		default:
			t.Fatalf("%s: unknown result %q", v.Name, v.Result)
		}
	}
	if results["ok"] == 0 || results["auth"] == 0 || results["format"] == 0 {
		t.Errorf("vectors cover results %v, want ok, auth and format", results)
	}
}

func resealWithSalt(t testing.TB, kind string, ct, dek []byte, keyID string, b Binding, pt []byte) []byte {
	t.Helper()
	if kind == "record" {
		seal := sealRecord
		if ct[len(magic)] == Version1 {
			seal = sealRecordV1
		}
		again, err := seal(saltOf(t, ct), dek, keyID, b, pt)
		if err != nil {
			t.Fatalf("reseal: %v", err)
		}
		return again
	}
	var buf bytes.Buffer
	w, err := newWriter(saltOf(t, ct), &buf, dek, keyID, b)
	if err == nil {
		_, err = w.Write(pt)
	}
	if err == nil {
		err = w.Close()
	}
	if err != nil {
		t.Fatalf("reseal: %v", err)
	}
	return buf.Bytes()
}

// craftStream seals chunks with chosen last flags, to build streams the
// Writer would never produce.
func craftStream(t *testing.T, seed byte, chunks [][]byte, lastFlags []bool) []byte {
	t.Helper()
	h, k, err := newHeader(detReader(seed), kindStream, testDEK, testKeyID, testBind)
	if err != nil {
		t.Fatal(err)
	}
	out := h.append(nil)
	var n [nonceSize]byte
	for i, c := range chunks {
		out = k.aead.Seal(out, nonce(&n, uint64(i), lastFlags[i]), c, k.aad)
	}
	return out
}

func writeVectors(t *testing.T) {
	var vs []vector
	bind := jsonBinding(testBind)
	add := func(name, kind string, dek []byte, b jsonBinding, pt, ct []byte, result string) {
		v := vector{Name: name, Kind: kind, DEK: hex.EncodeToString(dek), Binding: b, Ciphertext: hex.EncodeToString(ct), Result: result}
		if result == "ok" {
			v.KeyID = testKeyID
			v.Plaintext = hex.EncodeToString(pt)
		}
		vs = append(vs, v)
	}
	flip := func(ct []byte, i int) []byte {
		c := bytes.Clone(ct)
		c[(i+len(c))%len(c)] ^= 0x01
		return c
	}
	hs, _ := HeaderSize(testKeyID)

	// Records, version 1 (no longer written, still read).
	seed := byte(100)
	record := func(pt []byte) []byte {
		seed++
		ct, err := sealRecordV1(detReader(seed), testDEK, testKeyID, testBind, pt)
		if err != nil {
			t.Fatal(err)
		}
		return ct
	}
	add("record empty", "record", testDEK, bind, nil, record(nil), "ok")
	hello := []byte(`{"name":"Ada","plan":"pro"}`)
	helloCT := record(hello)
	add("record json", "record", testDEK, bind, hello, helloCT, "ok")
	add("record 300 bytes", "record", testDEK, bind, detBytes(1, 300), record(detBytes(1, 300)), "ok")
	other := bind
	other.Object = "obj-2"
	add("record opened as another object", "record", testDEK, other, nil, helloCT, "auth")
	other = bind
	other.Org = "org-2"
	add("record opened in another org", "record", testDEK, other, nil, helloCT, "auth")
	add("record shifted binding fields", "record", testDEK, jsonBinding{Org: "org-1s", Sandbox: "bx-1", Store: bind.Store, Object: bind.Object}, nil, helloCT, "auth")
	add("record opened with another key", "record", otherDEK, bind, nil, helloCT, "auth")
	add("record last tag byte flipped", "record", testDEK, bind, nil, flip(helloCT, -1), "auth")
	add("record first body byte flipped", "record", testDEK, bind, nil, flip(helloCT, hs), "auth")
	add("record salt byte flipped", "record", testDEK, bind, nil, flip(helloCT, fixedSize+len(testKeyID)), "auth")
	add("record commitment byte flipped", "record", testDEK, bind, nil, flip(helloCT, hs-1), "auth")
	add("record key id byte flipped", "record", testDEK, bind, nil, flip(helloCT, fixedSize), "auth")
	add("record truncated inside tag", "record", testDEK, bind, nil, helloCT[:len(helloCT)-1], "auth")
	add("record header only", "record", testDEK, bind, nil, helloCT[:hs], "auth")
	add("record byte appended", "record", testDEK, bind, nil, append(bytes.Clone(helloCT), 0), "auth")
	add("record bad magic", "record", testDEK, bind, nil, flip(helloCT, 0), "format")
	add("record version 1 read as version 2", "record", testDEK, bind, nil, append([]byte("CMKE\x02"), helloCT[5:]...), "auth")
	add("record version 3", "record", testDEK, bind, nil, append([]byte("CMKE\x03"), helloCT[5:]...), "format")
	add("record header truncated", "record", testDEK, bind, nil, helloCT[:hs-1], "format")
	add("record empty input", "record", testDEK, bind, nil, nil, "format")
	add("record opened as a stream", "stream", testDEK, bind, nil, helloCT, "format")
	add("record relabelled as a stream", "stream", testDEK, bind, nil, append([]byte("CMKE\x01S"), helloCT[6:]...), "auth")

	// Streams.
	stream := func(pt []byte) []byte {
		seed++
		return sealStream(t, seed, testDEK, testKeyID, testBind, pt)
	}
	add("stream empty (one empty last chunk)", "stream", testDEK, bind, nil, stream(nil), "ok")
	short := []byte("a short file\n")
	shortCT := stream(short)
	add("stream short", "stream", testDEK, bind, short, shortCT, "ok")
	full := detBytes(2, ChunkSize)
	fullCT := stream(full)
	add("stream of exactly one chunk (full chunk, then empty last chunk)", "stream", testDEK, bind, full, fullCT, "ok")
	other = bind
	other.Store = "lake-2"
	add("stream opened in another store", "stream", testDEK, other, nil, shortCT, "auth")
	add("stream opened with another key", "stream", otherDEK, bind, nil, shortCT, "auth")
	add("stream last byte flipped", "stream", testDEK, bind, nil, flip(shortCT, -1), "auth")
	add("stream byte appended", "stream", testDEK, bind, nil, append(bytes.Clone(shortCT), 0), "auth")
	add("stream header only (no last chunk)", "stream", testDEK, bind, nil, shortCT[:hs], "auth")
	add("stream truncated at the chunk boundary", "stream", testDEK, bind, nil, fullCT[:hs+ChunkSize+tagSize], "auth")
	add("stream truncated inside the last chunk", "stream", testDEK, bind, nil, shortCT[:len(shortCT)-1], "auth")
	add("stream full chunk marked last", "stream", testDEK, bind, nil, craftStream(t, 1, [][]byte{full}, []bool{true}), "auth")
	add("stream short chunk not marked last", "stream", testDEK, bind, nil, craftStream(t, 2, [][]byte{short}, []bool{false}), "auth")
	add("stream data after the last chunk", "stream", testDEK, bind, nil, craftStream(t, 3, [][]byte{nil, short}, []bool{true, true}), "auth")
	add("stream opened as a record", "record", testDEK, bind, nil, shortCT, "format")
	add("stream header truncated", "stream", testDEK, bind, nil, shortCT[:hs-1], "format")
	add("stream unknown kind", "stream", testDEK, bind, nil, append([]byte("CMKE\x01Z"), shortCT[6:]...), "format")

	// Records, version 2.
	seed = 200
	record2 := func(pt []byte) []byte {
		seed++
		ct, err := sealRecord(detReader(seed), testDEK, testKeyID, testBind, pt)
		if err != nil {
			t.Fatal(err)
		}
		return ct
	}
	pre := fixedSize + len(testKeyID)
	add("record v2 empty", "record", testDEK, bind, nil, record2(nil), "ok")
	hello2 := record2(hello)
	add("record v2 json", "record", testDEK, bind, hello, hello2, "ok")
	add("record v2 300 bytes", "record", testDEK, bind, detBytes(1, 300), record2(detBytes(1, 300)), "ok")
	other = bind
	other.Object = "obj-2"
	add("record v2 opened as another object", "record", testDEK, other, nil, hello2, "auth")
	other = bind
	other.Sandbox = "sbx-2"
	add("record v2 opened in another sandbox", "record", testDEK, other, nil, hello2, "auth")
	other = bind
	other.Org = "org-2"
	add("record v2 opened in another org", "record", testDEK, other, nil, hello2, "auth")
	other = bind
	other.Store = "lake"
	add("record v2 opened in another store", "record", testDEK, other, nil, hello2, "auth")
	add("record v2 shifted binding fields", "record", testDEK, jsonBinding{Org: "org-1s", Sandbox: "bx-1", Store: bind.Store, Object: bind.Object}, nil, hello2, "auth")
	add("record v2 opened with another key", "record", otherDEK, bind, nil, hello2, "auth")
	add("record v2 key id byte flipped", "record", testDEK, bind, nil, flip(hello2, fixedSize), "auth")
	add("record v2 nonce byte flipped", "record", testDEK, bind, nil, flip(hello2, pre), "auth")
	add("record v2 commitment byte flipped", "record", testDEK, bind, nil, flip(hello2, pre+nonceSize), "auth")
	add("record v2 first body byte flipped", "record", testDEK, bind, nil, flip(hello2, pre+nonceSize+commitSize), "auth")
	add("record v2 last tag byte flipped", "record", testDEK, bind, nil, flip(hello2, -1), "auth")
	add("record v2 truncated inside tag", "record", testDEK, bind, nil, hello2[:len(hello2)-1], "auth")
	add("record v2 header only", "record", testDEK, bind, nil, hello2[:pre+nonceSize+commitSize], "auth")
	add("record v2 header truncated", "record", testDEK, bind, nil, hello2[:pre+nonceSize+commitSize-1], "format")
	add("record v2 byte appended", "record", testDEK, bind, nil, append(bytes.Clone(hello2), 0), "auth")
	add("record v2 read as version 1", "record", testDEK, bind, nil, append([]byte("CMKE\x01"), hello2[5:]...), "auth")
	add("record v2 relabelled as a stream", "stream", testDEK, bind, nil, append([]byte("CMKE\x02S"), hello2[6:]...), "format")
	add("record v2 opened as a stream", "stream", testDEK, bind, nil, hello2, "format")

	data, err := json.MarshalIndent(vs, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(vectorsFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(vectorsFile, append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d vectors to %s", len(vs), vectorsFile)
}
