@tool
extends RefCounted
## Blocking HTTP/1.1 calls to `propforge serve` for worker threads (never the editor thread).
## Each call opens its own connection; `cancel_check` is polled while waiting so a cancelled
## or abandoned job stops within a few milliseconds.

const CONNECT_TIMEOUT_MS := 10000
const RESPONSE_TIMEOUT_MS := 30000
const POLL_MS := 5
const DEFAULT_ADDRESS := "http://127.0.0.1:8480"

var scheme := "http"
var host := "127.0.0.1"
var port := 8480
var token := ""
var address_error := ""
## Returns true when the caller wants to stop waiting.
var cancel_check := Callable()


func _init(address: String, bearer_token: String) -> void:
	token = bearer_token.strip_edges()
	var parsed := parse_address(address)
	address_error = parsed["error"]
	scheme = parsed["scheme"]
	host = parsed["host"]
	port = parsed["port"]


## "127.0.0.1:8480", "http://host:8480/" or "https://host" -> scheme, host, port (or an error).
static func parse_address(address: String) -> Dictionary:
	var a := address.strip_edges()
	if a.is_empty():
		a = DEFAULT_ADDRESS
	var out := {"scheme": "http", "host": "", "port": 8480, "error": ""}
	var sep := a.find("://")
	if sep >= 0:
		out["scheme"] = a.substr(0, sep).to_lower()
		a = a.substr(sep + 3)
	if out["scheme"] != "http" and out["scheme"] != "https":
		out["error"] = "server address '%s' must start with http:// or https://" % address
		return out
	var slash := a.find("/")
	if slash >= 0:
		a = a.substr(0, slash)
	out["port"] = 443 if out["scheme"] == "https" else 8480
	var colon := a.rfind(":")
	if colon > 0 and not a.ends_with("]"):
		var p := a.substr(colon + 1)
		if not p.is_valid_int() or p.to_int() <= 0 or p.to_int() > 65535:
			out["error"] = "server address '%s' has a bad port" % address
			return out
		out["port"] = p.to_int()
		a = a.substr(0, colon)
	if a.is_empty():
		out["error"] = "server address '%s' has no host" % address
	out["host"] = a
	return out


func base_url() -> String:
	return "%s://%s:%d" % [scheme, host, port]


func with_auth(extra: PackedStringArray) -> PackedStringArray:
	var h := PackedStringArray(extra)
	if not token.is_empty():
		h.append("Authorization: Bearer " + token)
	return h


func _stopping() -> bool:
	return cancel_check.is_valid() and bool(cancel_check.call())


## Connects and sends one request. Returns {"http": HTTPClient, "code": int, "headers": {lower-case
## name: value}} or {"error": String, "network": true/false, "stopped": true/false}.
func open(
	method: int, path: String, extra_headers: PackedStringArray, body: PackedByteArray
) -> Dictionary:
	if not address_error.is_empty():
		return {"error": address_error, "network": false, "stopped": false}
	var http := HTTPClient.new()
	var failure := _connect(http)
	if failure.is_empty():
		failure = _send(http, method, path, with_auth(extra_headers), body)
	if not failure.is_empty():
		http.close()
		return failure
	var headers := {}
	var raw: Dictionary = http.get_response_headers_as_dictionary()
	for k in raw:
		headers[str(k).to_lower()] = str(raw[k])
	return {"http": http, "code": http.get_response_code(), "headers": headers}


func _connect(http: HTTPClient) -> Dictionary:
	var tls: TLSOptions = TLSOptions.client() if scheme == "https" else null
	var err := http.connect_to_host(host, port, tls)
	if err != OK:
		return _net_error("cannot connect (error %d)" % err)
	var t0 := Time.get_ticks_msec()
	while http.get_status() in [HTTPClient.STATUS_RESOLVING, HTTPClient.STATUS_CONNECTING]:
		if _stopping():
			return {"error": "stopped", "network": false, "stopped": true}
		if Time.get_ticks_msec() - t0 > CONNECT_TIMEOUT_MS:
			return _net_error("timed out connecting")
		http.poll()
		OS.delay_msec(POLL_MS)
	if http.get_status() != HTTPClient.STATUS_CONNECTED:
		return _net_error("connection refused or host unknown")
	return {}


func _send(
	http: HTTPClient, method: int, path: String, headers: PackedStringArray, body: PackedByteArray
) -> Dictionary:
	var err := http.request_raw(method, path, headers, body)
	if err != OK:
		return _net_error("request failed (error %d)" % err)
	var t0 := Time.get_ticks_msec()
	while http.get_status() == HTTPClient.STATUS_REQUESTING:
		if _stopping():
			return {"error": "stopped", "network": false, "stopped": true}
		if Time.get_ticks_msec() - t0 > RESPONSE_TIMEOUT_MS:
			return _net_error("no answer within %d s" % (RESPONSE_TIMEOUT_MS / 1000))
		http.poll()
		OS.delay_msec(POLL_MS)
	if not http.has_response():
		return _net_error("the connection closed without a response")
	return {}


func _net_error(what: String) -> Dictionary:
	var msg := "cannot reach the PropForge server at %s (is `propforge serve` running?): %s"
	return {"error": msg % [base_url(), what], "network": true, "stopped": false}


## Reads the rest of a response body (bounded); closes the connection.
func read_all(resp: Dictionary, limit_bytes: int = 16 << 20) -> PackedByteArray:
	var http: HTTPClient = resp["http"]
	var body := PackedByteArray()
	var t0 := Time.get_ticks_msec()
	while http.get_status() == HTTPClient.STATUS_BODY:
		if _stopping() or Time.get_ticks_msec() - t0 > RESPONSE_TIMEOUT_MS:
			break
		http.poll()
		var chunk := http.read_response_body_chunk()
		if chunk.is_empty():
			OS.delay_msec(POLL_MS)
			continue
		body.append_array(chunk)
		if body.size() > limit_bytes:
			break
	http.close()
	return body


## One request with a JSON answer: {"code", "json" (Dictionary), "headers"} or {"error", ...}.
func request_json(
	method: int, path: String, extra_headers := PackedStringArray(), body := PackedByteArray()
) -> Dictionary:
	var resp := open(method, path, extra_headers, body)
	if resp.has("error"):
		return resp
	var text := read_all(resp).get_string_from_utf8()
	var code: int = resp["code"]
	if code < 200 or code >= 300:
		var net := code >= 502
		return {
			"error": problem_message(code, text), "code": code, "network": net, "stopped": false
		}
	var parsed: Variant = JSON.parse_string(text)
	if not parsed is Dictionary:
		return {
			"error": "the server sent invalid JSON for %s" % path,
			"network": false,
			"stopped": false
		}
	return {"code": code, "json": parsed, "headers": resp["headers"]}


## A problem+json error body -> one sentence a level designer can act on.
static func problem_message(code: int, body_text: String) -> String:
	var detail := ""
	var parsed: Variant = JSON.parse_string(body_text) if body_text.begins_with("{") else null
	if parsed is Dictionary:
		detail = str(parsed.get("detail", parsed.get("title", "")))
	elif not body_text.is_empty():
		detail = body_text.substr(0, 200)
	if detail.is_empty():
		detail = "HTTP %d" % code
	if code == 401 or code == 403:
		var msg := "the server rejected the token (HTTP %d): set it in the PropForge dock (%s)"
		return msg % [code, detail]
	if code == 404:
		return "not found on the server: " + detail
	if code == 429:
		return "the server queue is full, try again later: " + detail
	if code >= 400 and code < 500:
		return "the server refused the request (HTTP %d): %s" % [code, detail]
	return "server error (HTTP %d): %s" % [code, detail]


## multipart/form-data body with the `image` file part and the `options` JSON part.
static func multipart_body(
	boundary: String, image: PackedByteArray, file_name: String, options_json: String
) -> PackedByteArray:
	var safe := ""
	for ch in file_name.get_file():
		safe += ch if ch.unicode_at(0) >= 32 and ch.unicode_at(0) < 127 and ch != '"' else "_"
	if safe.is_empty():
		safe = "image.png"
	var head := '--%s\r\nContent-Disposition: form-data; name="image"; filename="%s"\r\n'
	head += "Content-Type: %s\r\n\r\n"
	var body := (head % [boundary, safe, mime_type(safe)]).to_utf8_buffer()
	body.append_array(image)
	var tail := '\r\n--%s\r\nContent-Disposition: form-data; name="options"\r\n'
	tail += "Content-Type: application/json\r\n\r\n%s\r\n--%s--\r\n"
	body.append_array((tail % [boundary, options_json, boundary]).to_utf8_buffer())
	return body


static func mime_type(file_name: String) -> String:
	match file_name.get_extension().to_lower():
		"jpg", "jpeg":
			return "image/jpeg"
		"webp":
			return "image/webp"
	return "image/png"
