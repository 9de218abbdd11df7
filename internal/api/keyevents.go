package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/cmk-project/cmk/internal/auth"
	"github.com/cmk-project/cmk/internal/cmkapi"
	"github.com/cmk-project/cmk/internal/control"
	"github.com/cmk-project/cmk/internal/keyid"
)

// EventSource says who may deliver Key Vault events: Event Grid, with a
// Microsoft Entra access token the Verifier accepts (issuer, audience,
// signature against the issuer's keys, lifetime) whose appid is AppID.
// Keys names the vault hosts events may be about (the host allowlist of
// key identifiers).
type EventSource struct {
	Verifier auth.Verifier
	AppID    string
	Keys     keyid.Policy
}

// Event Grid's webhook protocol.
const (
	headerEventType       = "aeg-event-type"
	eventTypeValidation   = "SubscriptionValidation"
	eventTypeNotification = "Notification"
	validationEventType   = "Microsoft.EventGrid.SubscriptionValidationEvent"
	// maxEventBody is Event Grid's largest delivery (a batch of at most 1 MB).
	maxEventBody = 1 << 20
	// maxValidationCode bounds the code echoed back (Event Grid's is a GUID).
	maxValidationCode = 256
	// maxDeliveryEvents bounds the events of one delivery cmk acts on. Event
	// Grid batches at most 5,000 by default; a vault's events come a few at
	// a time. The token proves Event Grid, not which topic published, so a
	// delivery naming thousands of keys is refused rather than looked up.
	maxDeliveryEvents = 100
)

// gridEvent is one event of a delivery, in the Event Grid schema; only the
// fields cmk reads.
type gridEvent struct {
	EventType string          `json:"eventType"`
	Subject   string          `json:"subject"`
	Data      json.RawMessage `json:"data"`
}

// keyEventData is the data of a Key Vault event; for the validation event
// only validationCode is used. validationUrl is never fetched.
type keyEventData struct {
	ID             string `json:"Id"`
	ObjectType     string `json:"ObjectType"`
	ObjectName     string `json:"ObjectName"`
	ValidationCode string `json:"validationCode"`
}

// keyVaultEvents receives Event Grid deliveries of Key Vault events: the
// subscription-validation handshake, and notifications, each of which only
// asks for the checks of the orgs using the key (control.KeyEvents). It
// answers a notification the same way whether or not the key is known.
func (s *Server) keyVaultEvents(w http.ResponseWriter, r *http.Request) {
	src := s.Events
	if src == nil || src.Verifier == nil {
		writeError(w, r, 404, cmkapi.CodeNotFound, "Key Vault events are not enabled",
			"This service does not accept Key Vault events.",
			"Start the service with --eventgrid-issuer, --eventgrid-jwks-url and --eventgrid-audience to accept them.")
		return
	}
	raw, err := auth.BearerToken(r)
	if err != nil {
		writeError(w, r, 401, cmkapi.CodeMissingToken, "Missing or malformed bearer token", err.Error(),
			"Protect the Event Grid subscription with Microsoft Entra authentication (the app's id or URI as audience).")
		return
	}
	claims, err := src.Verifier.Verify(r.Context(), raw)
	if err != nil {
		s.tokenError(w, r, err)
		return
	}
	if claims.AppID != src.AppID {
		writeError(w, r, 401, cmkapi.CodeInvalidToken, "Invalid token",
			fmt.Sprintf("The token was issued to app %q; this endpoint accepts deliveries from Event Grid only.", clipped(claims.AppID)),
			"Only Event Grid delivers Key Vault events here.")
		return
	}
	kind := r.Header.Get(headerEventType)
	if kind != eventTypeValidation && kind != eventTypeNotification {
		writeError(w, r, 400, cmkapi.CodeInvalidField, "Unknown delivery type",
			fmt.Sprintf("The %s header is %q; it must be %s or %s.", headerEventType, clipped(kind), eventTypeValidation, eventTypeNotification), "")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxEventBody+1))
	if err != nil {
		writeError(w, r, 400, cmkapi.CodeRequestBodyUnreadable, "Request body unreadable", "The body could not be read: "+err.Error()+".", "")
		return
	}
	if len(body) > maxEventBody {
		writeError(w, r, 413, cmkapi.CodeTooLarge, "Delivery too large",
			fmt.Sprintf("The body is larger than %d bytes, Event Grid's largest batch.", maxEventBody), "")
		return
	}
	var events []gridEvent
	if err := json.Unmarshal(body, &events); err != nil || len(events) == 0 {
		writeError(w, r, 400, cmkapi.CodeMalformedRequestBody, "Malformed request body",
			"The body must be a JSON array of events in the Event Grid schema.", "")
		return
	}
	if kind == eventTypeValidation {
		s.validateSubscription(w, r, events)
		return
	}
	if len(events) > maxDeliveryEvents {
		writeError(w, r, 413, cmkapi.CodeTooLarge, "Too many events",
			fmt.Sprintf("A delivery may hold at most %d events; this one holds %d. Set the subscription's maximum events per batch to %d or fewer.", maxDeliveryEvents, len(events), maxDeliveryEvents), "")
		return
	}
	var keyEvents []control.KeyEvent
	for i, ev := range events {
		if !control.Acts(ev.EventType) {
			continue // Event Grid retries what is refused; other types are simply not cmk's
		}
		ke, reason := parseKeyEvent(src.Keys, ev)
		if reason != "" {
			writeError(w, r, 400, cmkapi.CodeInvalidField, "Malformed Key Vault event", fmt.Sprintf("Event %d (%s): %s.", i, ev.EventType, reason), "")
			return
		}
		keyEvents = append(keyEvents, ke)
	}
	if err := s.Control.KeyEvents(r.Context(), keyEvents); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(200)
}

// validateSubscription answers the handshake: one validation event, whose
// code is echoed. The validation URL in it is never fetched.
func (s *Server) validateSubscription(w http.ResponseWriter, r *http.Request, events []gridEvent) {
	var d keyEventData
	if len(events) != 1 || events[0].EventType != validationEventType || json.Unmarshal(events[0].Data, &d) != nil {
		writeError(w, r, 400, cmkapi.CodeMalformedRequestBody, "Malformed validation request",
			"A SubscriptionValidation delivery carries exactly one "+validationEventType+" event.", "")
		return
	}
	code := d.ValidationCode
	if code == "" || len(code) > maxValidationCode || strings.IndexFunc(code, func(c rune) bool { return c <= ' ' || c > '~' }) >= 0 {
		writeError(w, r, 400, cmkapi.CodeInvalidField, "Invalid validation code",
			fmt.Sprintf("data.validationCode must be 1 to %d printable ASCII characters.", maxValidationCode), "")
		return
	}
	s.Log.Info("Event Grid subscription validated", "request_id", w.Header().Get(cmkapi.HeaderRequestID))
	writeJSON(w, 200, cmkapi.EventGridValidation{ValidationResponse: code})
}

// parseKeyEvent reads which key an event is about from data.Id alone,
// parsed against the host allowlist, and checks the event's other names
// agree with it. It returns a reason when the event is malformed.
func parseKeyEvent(p keyid.Policy, ev gridEvent) (control.KeyEvent, string) {
	var d keyEventData
	if err := json.Unmarshal(ev.Data, &d); err != nil {
		return control.KeyEvent{}, "data is not a Key Vault event's object"
	}
	if ev.EventType == control.EventVaultAccessPolicyChanged {
		id, err := p.ParseVault(d.ID)
		if err != nil {
			return control.KeyEvent{}, "data.Id is not an allowed vault URL: " + reasonOf(err)
		}
		return control.KeyEvent{Type: ev.EventType, VaultURL: id.VaultURL}, ""
	}
	id, err := p.Parse(d.ID)
	switch {
	case err != nil:
		return control.KeyEvent{}, "data.Id is not an allowed key identifier: " + reasonOf(err)
	case d.ObjectType != "" && d.ObjectType != "Key":
		return control.KeyEvent{}, fmt.Sprintf("data.ObjectType is %q; a key event is about a Key", clipped(d.ObjectType))
	case !strings.EqualFold(d.ObjectName, id.Name) || !strings.EqualFold(ev.Subject, id.Name):
		return control.KeyEvent{}, "subject and data.ObjectName must name the key of data.Id"
	}
	return control.KeyEvent{Type: ev.EventType, VaultURL: id.VaultURL, KeyName: id.Name}, ""
}

func reasonOf(err error) string {
	var pe *keyid.ParseError
	if errors.As(err, &pe) {
		return pe.Reason
	}
	return "not a Key Vault URL"
}

// clipped bounds a caller's string echoed in an answer.
func clipped(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
