@tool
extends RefCounted
## One "generate 3D from image" job: submit -> follow the SSE feed -> download the GLB (Range
## resume, sha256 check) into an ignored folder -> atomic rename into res://propforge/generated/.
## The network work runs on its own Thread; the editor thread calls poll() every frame and reads
## the public fields, which only the editor thread writes.

enum State { SUBMITTING, QUEUED, RUNNING, DOWNLOADING, SUCCEEDED, FAILED, CANCELLED }

const Client := preload("propforge_client.gd")
const SseParser := preload("sse_parser.gd")
const STATE_NAMES := [
	"submitting", "queued", "running", "downloading", "done", "failed", "cancelled"
]
const MAX_RETRIES := 5
const IDLE_TIMEOUT_MS := 45000  # the server sends ": keepalive" every 15 s
const CANCEL_WAIT_MS := 15000
const TERMINAL := ["finished", "failed", "cancelled"]

# Inputs, set before start().
var address := ""
var token := ""
var image_bytes := PackedByteArray()
var image_name := ""
var source_path := ""
var options := {}
var output_path := ""  # res://propforge/generated/<name>.glb
var partial_dir := "res://propforge/.partial"
var placement := {}  # what the dock does once the GLB is imported

# Outputs (editor thread only).
var job_id := ""
var state := State.SUBMITTING
var stage := ""
var step := 0
var total := 0
var fraction := 0.0
var eta := -1.0
var message := "submitting"
var error := ""
var result_size := 0
var result_sha256 := ""
var cached := false
var last_sequence := 0
var created_unix := 0.0

var _thread: Thread
var _mutex := Mutex.new()
var _inbox: Array[Dictionary] = []
var _cancel := false
var _abandon := false
var _phase := ""  # worker: "download" while fetching the result
var _expected_sha_header := ""  # worker: what the result response announced
var _part_abs := ""
var _output_abs := ""


func start() -> void:
	created_unix = Time.get_unix_time_from_system()
	_part_abs = ProjectSettings.globalize_path(partial_dir)
	_output_abs = ProjectSettings.globalize_path(output_path)
	_thread = Thread.new()
	_thread.start(_run.bind(job_id, last_sequence))


## User cancel: the server cancels the job; nothing is imported.
func cancel() -> void:
	_mutex.lock()
	_cancel = true
	_mutex.unlock()


## Editor closing: stop following but leave the job on the server (re-attached next time).
func abandon() -> void:
	_mutex.lock()
	_abandon = true
	_mutex.unlock()
	if _thread != null and _thread.is_started():
		_thread.wait_to_finish()
		_thread = null


func is_done() -> bool:
	return state in [State.SUCCEEDED, State.FAILED, State.CANCELLED]


func state_name() -> String:
	return STATE_NAMES[state]


## One line for the queue: "sample 12/25 · ETA 8 s".
func describe() -> String:
	if state in [State.FAILED, State.CANCELLED, State.SUCCEEDED, State.SUBMITTING]:
		return message
	var s := stage if not stage.is_empty() else message
	if total > 0:
		s += " %d/%d" % [step, total]
	elif not message.is_empty() and message != stage:
		s += " (%s)" % message
	if eta >= 0.0:
		s += " · ETA %d s" % ceili(eta)
	return s


## Applies what the worker reported; returns true when something changed.
func poll() -> bool:
	_mutex.lock()
	var msgs := _inbox
	_inbox = []
	_mutex.unlock()
	for m in msgs:
		_apply(m)
	return not msgs.is_empty()


func _apply(m: Dictionary) -> void:
	match str(m["type"]):
		"submitted":
			job_id = str(m["id"])
			state = State.QUEUED
			message = "queued"
		"event":
			_apply_event(m["event"])
		"download":
			state = State.DOWNLOADING
			message = "downloading %d KiB" % (int(m["done"]) >> 10)
		"done":
			state = State.SUCCEEDED
			fraction = 1.0
			message = "done (cached)" if cached else "done"
		"failed":
			state = State.FAILED
			error = str(m["error"])
			message = error
		"cancelled":
			state = State.CANCELLED
			message = "cancelled"
		"exit":
			if _thread != null:
				_thread.wait_to_finish()
				_thread = null


func _apply_event(ev: Dictionary) -> void:
	last_sequence = maxi(last_sequence, int(ev["sequence"]))
	var kind := str(ev["kind"])
	match kind:
		"queued":
			state = State.QUEUED
			message = "queued (position %d)" % int(ev.get("position", 0))
		"stage_started":
			state = State.RUNNING
			stage = str(ev.get("stage", ""))
			step = 0
			total = 0
		"progress":
			state = State.RUNNING
			stage = str(ev.get("stage", stage))
			step = int(ev.get("step", 0))
			total = int(ev.get("total", 0))
			fraction = clampf(float(ev.get("fraction", fraction)), 0.0, 1.0)
			eta = float(ev.get("etaSeconds", -1.0))
			message = str(ev.get("message", ""))
		"finished":
			result_size = str(ev.get("resultSize", "0")).to_int()  # uint64 -> JSON string
			result_sha256 = str(ev.get("resultSha256", ""))
			cached = bool(ev.get("cached", false))
			fraction = 1.0


# ---------------------------------------------------------------------------- worker thread


func _post(m: Dictionary) -> void:
	_mutex.lock()
	_inbox.append(m)
	_mutex.unlock()


func _flag(which: String) -> bool:
	_mutex.lock()
	var v := _abandon or (which == "cancel" and _cancel)
	v = v or (which == "hard" and _cancel and _phase == "download")
	_mutex.unlock()
	return v


func _stop_waiting() -> bool:
	return _flag("hard")


func _run(known_id: String, after: int) -> void:
	var client := Client.new(address, token)
	client.cancel_check = _stop_waiting
	var id := known_id
	if id.is_empty():
		id = _submit(client)
	if not id.is_empty():
		var last := _follow(client, id, after)
		_finish(client, id, last)
	_post({"type": "exit"})


func _submit(client: Client) -> String:
	var boundary := "PropForge%d%d" % [Time.get_ticks_usec(), randi()]
	var body := Client.multipart_body(boundary, image_bytes, image_name, JSON.stringify(options))
	var hdr := PackedStringArray(
		["Content-Type: multipart/form-data; boundary=" + boundary, "Accept: application/json"]
	)
	var r := client.request_json(HTTPClient.METHOD_POST, "/v1/jobs", hdr, body)
	if r.has("error"):
		_post({"type": "failed", "error": str(r["error"])})
		return ""
	var id := str(r["json"].get("id", ""))
	if id.is_empty():
		_post({"type": "failed", "error": "the server accepted the job but sent no id"})
		return ""
	_post({"type": "submitted", "id": id})
	return id


## Follows GET /v1/jobs/{id}/events until a terminal event; reconnects with Last-Event-ID.
## Returns the terminal event, or {} when it gave up (the failure is already posted).
func _follow(client: Client, id: String, after: int) -> Dictionary:
	var failures := 0
	var path := "/v1/jobs/%s/events" % id.uri_encode()
	var st := {"after": after, "progressed": false, "cancel_sent": false, "cancel_deadline": 0}
	while failures <= MAX_RETRIES:
		if _flag("abandon"):
			return {}
		var hdr := PackedStringArray(["Accept: text/event-stream"])
		if int(st["after"]) > 0:
			hdr.append("Last-Event-ID: %d" % int(st["after"]))
		var resp := client.open(HTTPClient.METHOD_GET, path, hdr, PackedByteArray())
		if resp.has("error") and not bool(resp["network"]):
			if not bool(resp["stopped"]):
				_post({"type": "failed", "error": str(resp["error"])})
			return {}
		var code: int = resp.get("code", 0)
		if code != 200 and code > 0 and code < 500:
			var text := client.read_all(resp).get_string_from_utf8()
			_post({"type": "failed", "error": Client.problem_message(code, text)})
			return {}
		if code == 200:
			st["progressed"] = false
			var ev := _read_stream(resp["http"], id, st)
			if ev.is_empty() and not _flag("abandon"):
				ev = _terminal_from_job(client, id, int(st["after"]))
			if not ev.is_empty():
				return ev
			if bool(st["progressed"]):
				failures = 0
		elif resp.has("http"):
			client.read_all(resp)
		if _flag("abandon"):
			return {}
		failures += 1
		OS.delay_msec(mini(8000, 250 << failures))
	var lost := "lost the event stream of job %s at %s" % [id, client.base_url()]
	_post({"type": "failed", "error": lost})
	return {}


## Reads one open event stream. Returns the terminal event, or {} when the stream ended, went
## silent or the job was abandoned (st carries the position and the cancel state across calls).
func _read_stream(http: HTTPClient, id: String, st: Dictionary) -> Dictionary:
	var parser := SseParser.new()
	var last_data := Time.get_ticks_msec()
	var result := {}
	while result.is_empty() and not _flag("abandon"):
		if _flag("cancel") and not bool(st["cancel_sent"]):
			st["cancel_sent"] = true
			st["cancel_deadline"] = Time.get_ticks_msec() + CANCEL_WAIT_MS
			_send_cancel(id)
		if bool(st["cancel_sent"]) and Time.get_ticks_msec() > int(st["cancel_deadline"]):
			result = {"kind": "cancelled", "sequence": st["after"]}
			break
		http.poll()
		if http.get_status() != HTTPClient.STATUS_BODY:
			break
		var chunk := http.read_response_body_chunk()
		if chunk.is_empty():
			if Time.get_ticks_msec() - last_data > IDLE_TIMEOUT_MS:
				break
			OS.delay_msec(Client.POLL_MS)
			continue
		last_data = Time.get_ticks_msec()
		for frame in parser.feed(chunk):
			var ev := parse_event(frame)
			var seq: int = ev["sequence"]
			if seq > 0 and seq <= int(st["after"]):
				continue  # seen before a reconnect
			st["after"] = maxi(int(st["after"]), seq)
			st["progressed"] = true
			_post({"type": "event", "event": ev})
			if str(ev["kind"]) in TERMINAL:
				result = ev
				break
	http.close()
	return result


## A stream that ends without a terminal event: a drop, or the job ended and its terminal event
## was seen before (re-attached after an editor restart). GET /v1/jobs/{id} tells which.
func _terminal_from_job(client: Client, id: String, after: int) -> Dictionary:
	var r := client.request_json(HTTPClient.METHOD_GET, "/v1/jobs/%s" % id.uri_encode())
	if r.has("error"):
		return {}
	var job: Dictionary = r["json"]
	var ev := {}
	match str(job.get("state", "")):
		"JOB_STATE_SUCCEEDED":
			ev = {
				"kind": "finished",
				"resultSize": job.get("resultSize", "0"),
				"resultSha256": job.get("resultSha256", ""),
				"cached": job.get("cached", false),
			}
		"JOB_STATE_FAILED":
			ev = {
				"kind": "failed", "reason": job.get("error", ""), "code": job.get("errorCode", "")
			}
		"JOB_STATE_CANCELLED":
			ev = {"kind": "cancelled"}
	if not ev.is_empty():
		ev["sequence"] = after
		_post({"type": "event", "event": ev})
	return ev


## An SSE frame -> flat event dictionary (kind, sequence and the fields of its oneof).
static func parse_event(frame: Dictionary) -> Dictionary:
	var data: Variant = JSON.parse_string(str(frame["data"]))
	var d: Dictionary = data if data is Dictionary else {}
	var seq := str(d.get("sequence", frame["id"])).to_int()
	var ev := {"kind": str(frame["event"]), "sequence": seq}
	var kinds := {
		"queued": "queued",
		"stageStarted": "stage_started",
		"progress": "progress",
		"finished": "finished",
		"failed": "failed",
		"cancelled": "cancelled",
	}
	for key in kinds:
		if d.get(key) is Dictionary:
			ev.merge(d[key])
			if ev["kind"] == "message":
				ev["kind"] = kinds[key]
	return ev


func _send_cancel(id: String) -> void:
	var c := Client.new(address, token)
	c.cancel_check = func() -> bool: return _flag("abandon")
	c.request_json(HTTPClient.METHOD_DELETE, "/v1/jobs/%s" % id.uri_encode())


func _finish(client: Client, id: String, last: Dictionary) -> void:
	if last.is_empty():
		return
	var kind := str(last["kind"])
	if kind == "failed":
		var why := str(last.get("reason", "no reason given"))
		var code := str(last.get("code", ""))
		var suffix := " (%s)" % code if not code.is_empty() else ""
		_post({"type": "failed", "error": "generation failed: " + why + suffix})
	elif kind == "cancelled" or _flag("cancel"):
		_post({"type": "cancelled"})
	else:
		var err := _download(client, id, str(last.get("resultSha256", "")))
		if _flag("cancel"):
			DirAccess.remove_absolute(_part_file(id))
			_post({"type": "cancelled"})
		elif not err.is_empty():
			_post({"type": "failed", "error": err})
		else:
			_post({"type": "done"})


func _part_file(id: String) -> String:
	return _part_abs.path_join(id.validate_filename() + ".glb.part")


## GET /v1/jobs/{id}/result into the partial folder (resuming with Range), verify size and
## sha256, then rename into place. Returns "" or the reason it failed.
func _download(client: Client, id: String, expected_sha: String) -> String:
	DirAccess.make_dir_recursive_absolute(_part_abs)
	# .gdignore: the editor never imports partial files; .gitignore: they are never committed.
	for marker in [[".gdignore", ""], [".gitignore", "*\n"]]:
		if not FileAccess.file_exists(_part_abs.path_join(marker[0])):
			var f := FileAccess.open(_part_abs.path_join(marker[0]), FileAccess.WRITE)
			if f != null:
				f.store_string(marker[1])
				f.close()
	var part := _part_file(id)
	_mutex.lock()
	_phase = "download"
	_mutex.unlock()
	var failures := 0
	var err := ""
	while failures <= MAX_RETRIES:
		if _flag("hard") or _flag("abandon"):
			return "stopped"
		err = _download_once(client, id, part)
		if err.is_empty():
			break
		if not err.begins_with("retry:"):
			return err
		failures += 1
		OS.delay_msec(mini(8000, 250 << failures))
	if not err.is_empty():
		return "download of job %s kept failing: %s" % [id, err.substr(6)]
	return _verify_and_place(part, expected_sha)


func _download_once(client: Client, id: String, part: String) -> String:
	var have := 0
	if FileAccess.file_exists(part):
		var f := FileAccess.open(part, FileAccess.READ)
		have = f.get_length() if f != null else 0
	var hdr := PackedStringArray()
	if have > 0:
		hdr.append("Range: bytes=%d-" % have)
	var path := "/v1/jobs/%s/result" % id.uri_encode()
	var resp := client.open(HTTPClient.METHOD_GET, path, hdr, PackedByteArray())
	if resp.has("error"):
		return "retry:" + str(resp["error"])
	var code: int = resp["code"]
	var headers: Dictionary = resp["headers"]
	if code == 416 or (code == 206 and _range_start(headers) != have):
		resp["http"].close()
		DirAccess.remove_absolute(part)
		return "retry:the server refused to resume; starting over"
	if code != 200 and code != 206:
		var text := client.read_all(resp).get_string_from_utf8()
		return Client.problem_message(code, text)
	var out := FileAccess.open(part, FileAccess.READ_WRITE if code == 206 else FileAccess.WRITE)
	if out == null:
		resp["http"].close()
		return "cannot write %s (error %d)" % [part, FileAccess.get_open_error()]
	var done := have if code == 206 else 0
	var expected := _total_size(headers, code)
	out.seek_end()
	_expected_sha_header = (
		str(headers.get("x-content-sha256", headers.get("etag", ""))).trim_prefix('"')
	)
	_expected_sha_header = _expected_sha_header.trim_suffix('"').to_lower()
	done = _copy_body(resp["http"], out, done, expected)
	out.close()
	if expected >= 0 and done != expected:
		return "retry:the download ended early (%d of %d bytes)" % [done, expected]
	return ""


func _copy_body(http: HTTPClient, out: FileAccess, done: int, expected: int) -> int:
	var last_report := 0
	var last_data := Time.get_ticks_msec()
	while http.get_status() == HTTPClient.STATUS_BODY:
		if _flag("hard") or Time.get_ticks_msec() - last_data > IDLE_TIMEOUT_MS:
			break
		http.poll()
		var chunk := http.read_response_body_chunk()
		if chunk.is_empty():
			OS.delay_msec(Client.POLL_MS)
			continue
		last_data = Time.get_ticks_msec()
		out.store_buffer(chunk)
		done += chunk.size()
		if done - last_report >= 256 << 10 or done == expected:
			last_report = done
			_post({"type": "download", "done": done, "total": expected})
	http.close()
	return done


static func _range_start(headers: Dictionary) -> int:
	# "bytes 100-199/200" -> 100
	var cr := str(headers.get("content-range", ""))
	if not cr.begins_with("bytes "):
		return -1
	return cr.substr(6).get_slice("-", 0).to_int()


static func _total_size(headers: Dictionary, code: int) -> int:
	if code == 206:
		return str(headers.get("content-range", "")).get_slice("/", 1).to_int()
	if headers.has("content-length"):
		return str(headers["content-length"]).to_int()
	return -1


func _verify_and_place(part: String, expected_sha: String) -> String:
	var sha := sha256_file(part)
	var want := _expected_sha_header if not _expected_sha_header.is_empty() else expected_sha
	var bad := sha.is_empty() or (not want.is_empty() and sha != want)
	bad = bad or (not expected_sha.is_empty() and sha != expected_sha.to_lower())
	if bad:
		DirAccess.remove_absolute(part)
		return (
			"the downloaded GLB is corrupt (sha256 %s, expected %s); deleted it, try again"
			% [sha, want]
		)
	DirAccess.make_dir_recursive_absolute(_output_abs.get_base_dir())
	var err := DirAccess.rename_absolute(part, _output_abs)
	if err != OK and FileAccess.file_exists(_output_abs):
		# Platforms whose rename does not replace: drop the old file, then rename.
		DirAccess.remove_absolute(_output_abs)
		err = DirAccess.rename_absolute(part, _output_abs)
	if err != OK:
		return "cannot move the GLB to %s (error %d)" % [output_path, err]
	return ""


static func sha256_file(path: String) -> String:
	var f := FileAccess.open(path, FileAccess.READ)
	if f == null:
		return ""
	var ctx := HashingContext.new()
	ctx.start(HashingContext.HASH_SHA256)
	while f.get_position() < f.get_length():
		ctx.update(f.get_buffer(1 << 20))
	f.close()
	return ctx.finish().hex_encode()
