package awsemu

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

const (
	sigAlgorithm = "AWS4-HMAC-SHA256"
	amzDateForm  = "20060102T150405Z"
	// maxSkew is how far X-Amz-Date may be from the emulator's clock, as
	// AWS allows.
	maxSkew = 5 * time.Minute
)

type sigV4Header struct {
	accessKeyID, date, region, service string
	signedHeaders                      []string
	signature                          string
}

func parseAuthorization(h string) (sigV4Header, *apiError) {
	var a sigV4Header
	rest, ok := strings.CutPrefix(h, sigAlgorithm+" ")
	if !ok {
		return a, &apiError{400, "IncompleteSignatureException",
			"Authorization header requires the " + sigAlgorithm + " algorithm: only Signature Version 4 is accepted."}
	}
	for _, part := range strings.Split(rest, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch name {
		case "Credential":
			f := strings.Split(val, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return a, &apiError{400, "IncompleteSignatureException",
					"Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/aws4_request, got '" + val + "'."}
			}
			a.accessKeyID, a.date, a.region, a.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			a.signedHeaders = strings.Split(val, ";")
		case "Signature":
			a.signature = val
		}
	}
	if a.accessKeyID == "" || len(a.signedHeaders) == 0 || a.signature == "" {
		return a, &apiError{400, "IncompleteSignatureException",
			"Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters."}
	}
	return a, nil
}

var errBadSignature = &apiError{400, "InvalidSignatureException",
	"The request signature we calculated does not match the signature you provided. " +
		"Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}

var errUnknownToken = &apiError{400, "UnrecognizedClientException", "The security token included in the request is invalid."}

// authenticate verifies a request's Signature Version 4 and returns the
// credential that signed it.
func (e *Emulator) authenticate(r *http.Request, body []byte) (*credential, *apiError) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return nil, &apiError{400, "MissingAuthenticationTokenException", "Missing Authentication Token"}
	}
	a, aerr := parseAuthorization(h)
	if aerr != nil {
		return nil, aerr
	}
	amzDate := r.Header.Get("X-Amz-Date")
	t, err := time.Parse(amzDateForm, amzDate)
	if err != nil {
		return nil, &apiError{400, "IncompleteSignatureException",
			"Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header in the form " + amzDateForm + "."}
	}
	if a.date != amzDate[:8] {
		return nil, &apiError{400, "InvalidSignatureException",
			fmt.Sprintf("Credential should be scoped to a valid date, not '%s' for a request made on %s.", a.date, amzDate[:8])}
	}
	if a.region != e.region {
		return nil, &apiError{400, "InvalidSignatureException",
			fmt.Sprintf("Credential should be scoped to a valid region, not '%s'. This endpoint serves '%s'.", a.region, e.region)}
	}
	if a.service != "kms" {
		return nil, &apiError{400, "InvalidSignatureException",
			fmt.Sprintf("Credential should be scoped to correct service: 'kms', not '%s'.", a.service)}
	}
	if !contains(a.signedHeaders, "host") || !contains(a.signedHeaders, "x-amz-date") {
		return nil, &apiError{400, "InvalidSignatureException", "'Host' and 'X-Amz-Date' must be signed headers."}
	}
	e.mu.Lock()
	c := e.creds[a.accessKeyID]
	now := e.now()
	e.mu.Unlock()
	if c == nil {
		return nil, errUnknownToken
	}
	if tok := r.Header.Get("X-Amz-Security-Token"); tok != c.token || (c.token != "" && !contains(a.signedHeaders, "x-amz-security-token")) {
		return nil, errUnknownToken
	}
	if d := now.Sub(t); d > maxSkew || d < -maxSkew {
		return nil, &apiError{400, "InvalidSignatureException", fmt.Sprintf(
			"Signature expired: %s is now earlier than %s (%s - 5 min.)", amzDate,
			now.UTC().Add(-maxSkew).Format(amzDateForm), now.UTC().Format(amzDateForm))}
	}
	want := signature(c.secret, a, amzDate, canonicalRequest(r, a.signedHeaders, body))
	got, err := hex.DecodeString(a.signature)
	if err != nil || !hmac.Equal(got, want) {
		return nil, errBadSignature
	}
	if !c.expires.IsZero() && !now.Before(c.expires) {
		return nil, &apiError{400, "ExpiredTokenException", "The security token included in the request is expired"}
	}
	return c, nil
}

func contains(xs []string, x string) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

func canonicalRequest(r *http.Request, signed []string, body []byte) string {
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	b.WriteString(canonicalURI(r.URL.Path) + "\n")
	b.WriteString(canonicalQuery(r.URL.Query()) + "\n")
	for _, h := range signed {
		var v string
		switch h {
		case "host":
			v = r.Host
		case "content-length":
			v = r.Header.Get("Content-Length")
			if v == "" {
				v = strconv.FormatInt(r.ContentLength, 10)
			}
		default:
			vals := r.Header.Values(h)
			for i := range vals {
				vals[i] = strings.Join(strings.Fields(vals[i]), " ")
			}
			v = strings.Join(vals, ",")
		}
		b.WriteString(h + ":" + v + "\n")
	}
	b.WriteString("\n" + strings.Join(signed, ";") + "\n")
	sum := sha256.Sum256(body)
	b.WriteString(hex.EncodeToString(sum[:]))
	return b.String()
}

func canonicalURI(path string) string {
	if path == "" {
		return "/"
	}
	segs := strings.Split(path, "/")
	for i, s := range segs {
		segs[i] = uriEncode(uriEncode(s))
	}
	return strings.Join(segs, "/")
}

func canonicalQuery(q url.Values) string {
	var pairs []string
	for k, vs := range q {
		for _, v := range vs {
			pairs = append(pairs, uriEncode(k)+"="+uriEncode(v))
		}
	}
	sort.Strings(pairs)
	return strings.Join(pairs, "&")
}

// uriEncode percent-encodes everything but the unreserved characters, as
// Signature Version 4 asks.
func uriEncode(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func signature(secret string, a sigV4Header, amzDate, canonical string) []byte {
	scope := a.date + "/" + a.region + "/" + a.service + "/aws4_request"
	sum := sha256.Sum256([]byte(canonical))
	toSign := sigAlgorithm + "\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	k := hmacSHA256([]byte("AWS4"+secret), a.date)
	k = hmacSHA256(k, a.region)
	k = hmacSHA256(k, a.service)
	k = hmacSHA256(k, "aws4_request")
	return hmacSHA256(k, toSign)
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
