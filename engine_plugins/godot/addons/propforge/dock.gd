@tool
extends VBoxContainer
## The PropForge dock: server and token (EditorSettings, never in the project), job options, the
## live queue (stage, step i/n, ETA, cancel), the history (re-run with the same seed, place) and
## the watch-mode drop folder. Jobs run on their own threads (propforge_job.gd) and the server
## check uses HTTPRequest, so the editor never waits on the network.

const Job := preload("propforge_job.gd")
const Client := preload("propforge_client.gd")
const Placement := preload("placement.gd")

const SETTING_ADDRESS := "propforge/server/address"
const SETTING_TOKEN := "propforge/server/token"
const GENERATED_DIR := "res://propforge/generated"
const DROP_DIR := "res://propforge/drop"
const PARTIAL_DIR := "res://propforge/.partial"
const HISTORY_FILE := "res://.godot/propforge/history.json"
const HISTORY_LIMIT := 100
const IMAGE_EXTENSIONS := ["png", "jpg", "jpeg", "webp"]
const QUALITIES := ["draft", "standard", "high"]
const TEXTURE_SIZES := [256, 512, 1024, 2048, 4096]
## JobOptions.collision: Godot's importer turns the `-convcolonly` / `-colonly` node into a shape.
## No LOD option: Godot generates mesh LODs on import and would show every `_LOD` node.
const COLLISIONS := ["none", "convex", "mesh"]
const IMPORT_SETTLE_MS := 3000
const IMPORT_RESCAN_MS := 8000
const DROP_LIST_LIMIT := 500

var _undo: EditorUndoRedoManager
var _jobs: Array[Job] = []
var _rows := {}  # Job -> {"bar": ProgressBar, "label": Label, "cancel": Button, "box": Control}
var _entry_of := {}  # Job -> history entry (Dictionary, shared with _history)
var _history: Array[Dictionary] = []
var _pending_imports := {}  # res:// path -> {"placement", "since", "scans"}

var _address: LineEdit
var _token: LineEdit
var _server_status: Label
var _quality: OptionButton
var _backend: OptionButton
var _faces: SpinBox
var _texture: OptionButton
var _height: SpinBox
var _collision: OptionButton
var _seed: SpinBox
var _random_seed: CheckBox
var _place: CheckBox
var _queue: VBoxContainer
var _history_list: ItemList
var _drop_list: ItemList
var _message: Label
var _file_dialog: EditorFileDialog
var _http: HTTPRequest
var _check_step := ""
var _drop_timer: Timer


## Called once by plugin.gd (not from _ready, so opening dock.tscn in the editor does nothing).
func setup(undo: EditorUndoRedoManager) -> void:
	_undo = undo
	name = "PropForge"
	_build_ui()
	_load_settings()
	_load_history()
	_reattach_pending()
	EditorInterface.get_resource_filesystem().resources_reimported.connect(_on_resources_reimported)


## Plugin disabled or editor closing: stop following jobs (they keep running on the server and
## are re-attached next time); nothing already imported is touched.
func shutdown() -> void:
	for job in _jobs:
		job.abandon()
		job.poll()
		_sync_entry(job)
		var entry: Dictionary = _entry_of.get(job, {})
		if str(entry.get("state", "")) == "pending" and job.job_id.is_empty():
			entry["state"] = "failed"
			entry["error"] = "the editor closed before the server accepted the job"
	_save_history()
	var efs := EditorInterface.get_resource_filesystem()
	if efs.resources_reimported.is_connected(_on_resources_reimported):
		efs.resources_reimported.disconnect(_on_resources_reimported)


# ---------------------------------------------------------------------------- UI


func _build_ui() -> void:
	_section("Server")
	_address = LineEdit.new()
	_address.placeholder_text = Client.DEFAULT_ADDRESS
	_address.text_changed.connect(_on_setting_edited)
	_row("Address", _address)
	_token = LineEdit.new()
	_token.secret = true
	_token.placeholder_text = "(none)"
	_token.text_changed.connect(_on_setting_edited)
	_row("Token", _token)
	var check := Button.new()
	check.text = "Check connection"
	check.pressed.connect(_check_connection)
	_server_status = Label.new()
	_server_status.autowrap_mode = TextServer.AUTOWRAP_WORD_SMART
	add_child(check)
	add_child(_server_status)
	_http = HTTPRequest.new()
	_http.timeout = 10.0
	_http.request_completed.connect(_on_check_completed)
	add_child(_http)
	_build_options()
	_build_lists()
	_file_dialog = EditorFileDialog.new()
	_file_dialog.file_mode = EditorFileDialog.FILE_MODE_OPEN_FILES
	_file_dialog.access = EditorFileDialog.ACCESS_FILESYSTEM
	_file_dialog.title = "Generate 3D from image"
	_file_dialog.add_filter("*.png, *.jpg, *.jpeg, *.webp", "Images")
	_file_dialog.files_selected.connect(generate_from_paths)
	add_child(_file_dialog)
	_drop_timer = Timer.new()
	_drop_timer.wait_time = 2.0
	_drop_timer.timeout.connect(_refresh_drop_folder)
	_drop_timer.autostart = true
	add_child(_drop_timer)


func _build_options() -> void:
	_section("Options")
	_quality = OptionButton.new()
	for q in QUALITIES:
		_quality.add_item(q)
	_quality.select(1)
	_row("Quality", _quality)
	_backend = OptionButton.new()
	_backend.add_item("auto")
	_row("Backend", _backend)
	_faces = _spin(500, 500000, 500, 20000)
	_row("Face budget", _faces)
	_texture = OptionButton.new()
	for t in TEXTURE_SIZES:
		_texture.add_item("%d px" % t)
	_texture.select(2)
	_row("Texture", _texture)
	_height = _spin(0.05, 100.0, 0.05, 1.0)
	_height.suffix = "m"
	_row("Height", _height)
	_collision = OptionButton.new()
	for c in COLLISIONS:
		_collision.add_item(c)
	_collision.select(0)
	_collision.tooltip_text = "convex: hull (ConvexPolygonShape3D); mesh: decimated trimesh"
	_row("Collision", _collision)
	_seed = _spin(0, 2147483647, 1, 0)
	_random_seed = CheckBox.new()
	_random_seed.text = "random"
	_random_seed.button_pressed = true
	var seed_box := HBoxContainer.new()
	_seed.size_flags_horizontal = Control.SIZE_EXPAND_FILL
	seed_box.add_child(_seed)
	seed_box.add_child(_random_seed)
	_row("Seed", seed_box)
	_place = CheckBox.new()
	_place.text = "Place in scene (at selection / replace placeholder box)"
	_place.button_pressed = true
	add_child(_place)
	var buttons := HBoxContainer.new()
	var pick := Button.new()
	pick.text = "Generate from image..."
	pick.pressed.connect(open_file_dialog)
	var from_sel := Button.new()
	from_sel.text = "From FileSystem selection"
	from_sel.pressed.connect(_generate_from_selection)
	buttons.add_child(pick)
	buttons.add_child(from_sel)
	add_child(buttons)
	_message = Label.new()
	_message.autowrap_mode = TextServer.AUTOWRAP_WORD_SMART
	add_child(_message)


func _build_lists() -> void:
	_section("Queue")
	_queue = VBoxContainer.new()
	add_child(_queue)
	_section("History")
	_history_list = ItemList.new()
	_history_list.custom_minimum_size = Vector2(0, 120)
	_history_list.size_flags_vertical = Control.SIZE_EXPAND_FILL
	add_child(_history_list)
	var buttons := HBoxContainer.new()
	for spec in [
		["Re-run (same seed)", _rerun_selected],
		["Place", _place_selected],
		["Show", _show_selected],
		["Clear", _clear_history],
	]:
		var b := Button.new()
		b.text = spec[0]
		b.pressed.connect(spec[1])
		buttons.add_child(b)
	add_child(buttons)
	_section("Drop folder (%s)" % DROP_DIR)
	_drop_list = ItemList.new()
	_drop_list.custom_minimum_size = Vector2(0, 100)
	add_child(_drop_list)


func _section(title: String) -> void:
	var l := Label.new()
	l.text = title
	l.add_theme_color_override("font_color", Color(0.6, 0.8, 1.0))
	add_child(HSeparator.new())
	add_child(l)


func _row(label: String, control: Control) -> void:
	var h := HBoxContainer.new()
	var l := Label.new()
	l.text = label
	l.custom_minimum_size = Vector2(90, 0)
	control.size_flags_horizontal = Control.SIZE_EXPAND_FILL
	h.add_child(l)
	h.add_child(control)
	add_child(h)


func _spin(lo: float, hi: float, step: float, value: float) -> SpinBox:
	var s := SpinBox.new()
	s.min_value = lo
	s.max_value = hi
	s.step = step
	s.value = value
	return s


func _show_error(text: String) -> void:
	_message.add_theme_color_override("font_color", Color(1.0, 0.45, 0.4))
	_message.text = text
	push_warning("PropForge: " + text)


func _show_info(text: String) -> void:
	_message.remove_theme_color_override("font_color")
	_message.text = text


# ---------------------------------------------------------------------------- settings


func _load_settings() -> void:
	var es := EditorInterface.get_editor_settings()
	for key in [SETTING_ADDRESS, SETTING_TOKEN]:
		if not es.has_setting(key):
			es.set_setting(key, Client.DEFAULT_ADDRESS if key == SETTING_ADDRESS else "")
		es.set_initial_value(key, Client.DEFAULT_ADDRESS if key == SETTING_ADDRESS else "", false)
		es.add_property_info({"name": key, "type": TYPE_STRING})
	_address.text = str(es.get_setting(SETTING_ADDRESS))
	_token.text = str(es.get_setting(SETTING_TOKEN))


func _on_setting_edited(_text: String) -> void:
	var es := EditorInterface.get_editor_settings()
	es.set_setting(SETTING_ADDRESS, _address.text.strip_edges())
	es.set_setting(SETTING_TOKEN, _token.text.strip_edges())


func _auth_headers() -> PackedStringArray:
	var h := PackedStringArray()
	if not _token.text.strip_edges().is_empty():
		h.append("Authorization: Bearer " + _token.text.strip_edges())
	return h


## GET /v2/health/ready, then GET /v1/backends (which also proves the token).
func _check_connection() -> void:
	var parsed := Client.parse_address(_address.text)
	if not str(parsed["error"]).is_empty():
		_server_status.text = str(parsed["error"])
		return
	_http.cancel_request()
	_check_step = "ready"
	_server_status.text = "checking..."
	_http.request(_base_url() + "/v2/health/ready")


func _base_url() -> String:
	var p := Client.parse_address(_address.text)
	return "%s://%s:%d" % [p["scheme"], p["host"], p["port"]]


func _on_check_completed(
	result: int, code: int, _headers: PackedStringArray, body: PackedByteArray
) -> void:
	if result != HTTPRequest.RESULT_SUCCESS:
		_server_status.text = "cannot reach %s (is `propforge serve` running?)" % _base_url()
		return
	var text := body.get_string_from_utf8()
	if _check_step == "ready":
		if code != 200:
			_server_status.text = "server is up but not ready (HTTP %d)" % code
			return
		_check_step = "backends"
		# Deferred: a new request from inside request_completed can find the node still busy.
		_http.request.call_deferred(_base_url() + "/v1/backends", _auth_headers())
		return
	if code != 200:
		_server_status.text = Client.problem_message(code, text)
		return
	var parsed: Variant = JSON.parse_string(text)
	var d: Dictionary = parsed if parsed is Dictionary else {}
	var names := PackedStringArray()
	_backend.clear()
	_backend.add_item("auto")
	for b in d.get("backends", []):
		if b is Dictionary:
			var ok := bool(b.get("available", false))
			names.append(str(b.get("name", "")) + ("" if ok else " (unavailable)"))
			if ok:
				_backend.add_item(str(b.get("name", "")))
	_server_status.text = (
		"connected: %s (default %s)" % [", ".join(names), str(d.get("defaultBackend", "?"))]
	)


# ---------------------------------------------------------------------------- generating


func open_file_dialog() -> void:
	_file_dialog.popup_centered_ratio(0.6)


func _generate_from_selection() -> void:
	var paths := PackedStringArray()
	if EditorInterface.has_method("get_selected_paths"):
		paths = EditorInterface.call("get_selected_paths")
	else:
		paths.append(EditorInterface.get_current_path())
	generate_from_paths(paths)


## Menu, context menu, file dialog and buttons all end here.
func generate_from_paths(paths: PackedStringArray) -> void:
	var images := PackedStringArray()
	for p in paths:
		if p.get_extension().to_lower() in IMAGE_EXTENSIONS:
			images.append(p)
	if images.is_empty():
		_show_error("choose PNG, JPEG or WebP images to generate from")
		return
	var ctx := {}
	if _place.button_pressed and images.size() == 1:
		ctx = Placement.capture()
		if ctx.is_empty():
			_show_info("no 3D scene is open: the prop will be imported but not placed")
	for i in images.size():
		_start_job(images[i], _options_from_ui(ctx), ctx if i == 0 else {})


## JobOptions in the proto3 JSON mapping (uint64 seed as a string).
func _options_from_ui(ctx: Dictionary) -> Dictionary:
	if _random_seed.button_pressed:
		_seed.value = randi() % 2147483647
	var height := _height.value
	if bool(ctx.get("replace", false)):
		var size: Vector3 = ctx["size"]
		height = clampf(size.y, 0.01, 1000.0)
	var opts := {
		"quality": QUALITIES[_quality.selected],
		"faces": int(_faces.value),
		"textureSize": TEXTURE_SIZES[_texture.selected],
		"height": height,
		"seed": str(int(_seed.value)),
		"hasSeed": true,
	}
	var backend := _backend.get_item_text(_backend.selected)
	if backend != "auto":
		opts["backend"] = backend
	if _collision.selected > 0:
		opts["collision"] = COLLISIONS[_collision.selected]
	return opts


func _output_for(source: String) -> String:
	var stem := source.get_file().get_basename().validate_filename()
	var path := GENERATED_DIR.path_join(stem + ".glb")
	var n := 2
	while _output_taken_by_other(path, source):
		path = GENERATED_DIR.path_join("%s_%d.glb" % [stem, n])
		n += 1
	return path


func _output_taken_by_other(path: String, source: String) -> bool:
	for e in _history:
		if str(e.get("output", "")) == path and str(e.get("source", "")) != source:
			return true
	return false


func _start_job(source: String, options: Dictionary, placement: Dictionary) -> void:
	var bytes := FileAccess.get_file_as_bytes(source)
	if bytes.is_empty():
		var why := error_string(FileAccess.get_open_error())
		_show_error("cannot read %s (%s)" % [source, why])
		return
	var entry := {
		"id": "",
		"source": source,
		"output": _output_for(source),
		"options": options,
		"state": "pending",
		"error": "",
		"time": Time.get_datetime_string_from_system(),
		"sequence": 0,
	}
	var job := _make_job(entry)
	job.image_bytes = bytes
	job.placement = placement
	_history.push_front(entry)
	_launch(job, entry)
	_show_info("submitting %s..." % source.get_file())


func _make_job(entry: Dictionary) -> Job:
	var job := Job.new()
	job.address = _address.text
	job.token = _token.text.strip_edges()
	job.source_path = str(entry["source"])
	job.image_name = str(entry["source"]).get_file()
	job.options = entry["options"]
	job.output_path = str(entry["output"])
	job.partial_dir = PARTIAL_DIR
	return job


func _launch(job: Job, entry: Dictionary) -> void:
	_entry_of[job] = entry
	_jobs.append(job)
	_add_row(job)
	job.start()
	_save_history()
	_refresh_history()


## Jobs that were still running when the editor closed: follow them again from their last event.
func _reattach_pending() -> void:
	for entry in _history:
		if str(entry.get("state", "")) != "pending" or str(entry.get("id", "")).is_empty():
			continue
		var job := _make_job(entry)
		job.job_id = str(entry["id"])
		job.last_sequence = int(entry.get("sequence", 0))
		_launch(job, entry)


# ---------------------------------------------------------------------------- queue


func _add_row(job: Job) -> void:
	var box := VBoxContainer.new()
	var top := HBoxContainer.new()
	var name_label := Label.new()
	name_label.text = job.output_path.get_file()
	name_label.size_flags_horizontal = Control.SIZE_EXPAND_FILL
	name_label.clip_text = true
	var cancel := Button.new()
	cancel.text = "Cancel"
	cancel.pressed.connect(_on_cancel_pressed.bind(job))
	top.add_child(name_label)
	top.add_child(cancel)
	var bar := ProgressBar.new()
	bar.min_value = 0.0
	bar.max_value = 1.0
	bar.step = 0.001
	var detail := Label.new()
	detail.clip_text = true
	box.add_child(top)
	box.add_child(bar)
	box.add_child(detail)
	_queue.add_child(box)
	_rows[job] = {"box": box, "bar": bar, "label": detail, "cancel": cancel}
	_update_row(job)


func _on_cancel_pressed(job: Job) -> void:
	job.cancel()
	var cancel: Button = _rows[job]["cancel"]
	cancel.disabled = true
	cancel.text = "Cancelling..."


func _update_row(job: Job) -> void:
	var row: Dictionary = _rows[job]
	(row["bar"] as ProgressBar).value = job.fraction
	(row["label"] as Label).text = "%s: %s" % [job.state_name(), job.describe()]
	(row["label"] as Label).tooltip_text = job.describe()


func _process(_delta: float) -> void:
	if _undo == null:
		return
	for job in _jobs.duplicate():
		if job.poll():
			_on_job_changed(job)
	_check_pending_imports()


func _on_job_changed(job: Job) -> void:
	_update_row(job)
	_sync_entry(job)
	if not job.is_done():
		return
	_jobs.erase(job)
	(_rows[job]["box"] as Control).queue_free()
	_rows.erase(job)
	_entry_of.erase(job)
	var file := job.output_path.get_file()
	if job.state == Job.State.SUCCEEDED:
		_show_info("%s downloaded (%d KiB), importing..." % [file, job.result_size >> 10])
		_start_import(job.output_path, job.placement)
	elif job.state == Job.State.FAILED:
		_show_error("%s: %s" % [job.image_name, job.error])
	else:
		_show_info("%s: cancelled" % job.image_name)
	_save_history()
	_refresh_history()


func _sync_entry(job: Job) -> void:
	if not _entry_of.has(job):
		return
	var entry: Dictionary = _entry_of[job]
	entry["id"] = job.job_id
	entry["sequence"] = job.last_sequence
	if job.state == Job.State.SUCCEEDED:
		entry["state"] = "done"
		entry["sha256"] = job.result_sha256
	elif job.state == Job.State.FAILED:
		entry["state"] = "failed"
		entry["error"] = job.error
	elif job.state == Job.State.CANCELLED:
		entry["state"] = "cancelled"


# ---------------------------------------------------------------------------- import + placement


## The GLB was renamed into res://propforge/generated/: let the editor import it, then place it.
func _start_import(path: String, placement: Dictionary) -> void:
	_pending_imports[path] = {"placement": placement, "since": Time.get_ticks_msec(), "scans": 1}
	var efs := EditorInterface.get_resource_filesystem()
	if efs.get_file_type(path) == "PackedScene" and not efs.is_scanning():
		efs.reimport_files(PackedStringArray([path]))  # regenerated: refresh the known file now
	else:
		efs.scan()  # new file: the scan finds and imports it


func _on_resources_reimported(resources: PackedStringArray) -> void:
	for path in resources:
		if _pending_imports.has(path):
			_finish_import(path)


## Fallback when no reimport signal names our file (e.g. identical bytes, or a scan was running).
func _check_pending_imports() -> void:
	if _pending_imports.is_empty():
		return
	var efs := EditorInterface.get_resource_filesystem()
	if efs.is_scanning():
		return
	var now := Time.get_ticks_msec()
	for path in _pending_imports.keys():
		var p: Dictionary = _pending_imports[path]
		var age: int = now - int(p["since"])
		if age > IMPORT_SETTLE_MS and efs.get_file_type(path) == "PackedScene":
			_finish_import(path)
		elif age > IMPORT_RESCAN_MS * int(p["scans"]):
			if int(p["scans"]) >= 4:
				_pending_imports.erase(path)
				_show_error("%s is saved but was not imported; use FileSystem > Reimport" % path)
			else:
				p["scans"] = int(p["scans"]) + 1
				efs.scan()


func _finish_import(path: String) -> void:
	var p: Dictionary = _pending_imports[path]
	_pending_imports.erase(path)
	var res := ResourceLoader.load(path, "PackedScene", ResourceLoader.CACHE_MODE_REPLACE)
	var packed := res as PackedScene
	if packed == null:
		_show_error("%s is saved but could not be loaded as a scene" % path)
		return
	var ctx: Dictionary = p["placement"]
	if ctx.is_empty():
		_show_info("%s imported" % path.get_file())
		return
	var why := Placement.place(packed, ctx, _undo, path.get_file().get_basename())
	if why.is_empty():
		_show_info("%s imported and placed (Ctrl+Z undoes)" % path.get_file())
	else:
		_show_info("%s imported; not placed: %s" % [path.get_file(), why])


# ---------------------------------------------------------------------------- history


func _refresh_history() -> void:
	_history_list.clear()
	for e in _history:
		var o: Dictionary = e.get("options", {})
		var text := (
			"%s  %s  [%s, seed %s, %s faces, %s px]"
			% [
				_state_mark(str(e.get("state", ""))),
				str(e.get("output", "")).get_file(),
				str(o.get("quality", "")),
				str(o.get("seed", "")),
				str(o.get("faces", "")),
				str(o.get("textureSize", "")),
			]
		)
		var i := _history_list.add_item(text)
		var tip := "source: %s\ntime: %s" % [e.get("source", ""), e.get("time", "")]
		if not str(e.get("error", "")).is_empty():
			tip += "\nerror: " + str(e["error"])
		_history_list.set_item_tooltip(i, tip)


static func _state_mark(state: String) -> String:
	match state:
		"done":
			return "[done]"
		"failed":
			return "[failed]"
		"cancelled":
			return "[cancelled]"
	return "[running]"


func _selected_entry() -> Dictionary:
	var sel := _history_list.get_selected_items()
	if sel.is_empty() or sel[0] >= _history.size():
		_show_error("select a job in the history first")
		return {}
	return _history[sel[0]]


func _rerun_selected() -> void:
	var e := _selected_entry()
	if e.is_empty():
		return
	var ctx := Placement.capture() if _place.button_pressed else {}
	var opts: Dictionary = (e["options"] as Dictionary).duplicate(true)
	_start_job(str(e["source"]), opts, ctx)


func _place_selected() -> void:
	var e := _selected_entry()
	if e.is_empty():
		return
	var path := str(e.get("output", ""))
	var packed := ResourceLoader.load(path, "PackedScene") as PackedScene
	if packed == null:
		_show_error("%s is not imported (yet)" % path)
		return
	var ctx := Placement.capture()
	if ctx.is_empty():
		_show_error("open a 3D scene to place the prop")
		return
	var why := Placement.place(packed, ctx, _undo, path.get_file().get_basename())
	if not why.is_empty():
		_show_error(why)


func _show_selected() -> void:
	var e := _selected_entry()
	if not e.is_empty():
		EditorInterface.get_file_system_dock().navigate_to_path(str(e.get("output", "")))


func _clear_history() -> void:
	var kept: Array[Dictionary] = []
	for e in _history:
		if str(e.get("state", "")) == "pending":
			kept.append(e)
	_history = kept
	_save_history()
	_refresh_history()


func _load_history() -> void:
	if not FileAccess.file_exists(HISTORY_FILE):
		return
	var parsed: Variant = JSON.parse_string(FileAccess.get_file_as_string(HISTORY_FILE))
	if not parsed is Array:
		return
	for e in parsed:
		if (
			e is Dictionary
			and e.has("source")
			and e.has("output")
			and e.get("options") is Dictionary
		):
			e["options"] = _normalize_options(e["options"])
			_history.append(e)
	_refresh_history()


## JSON gives every number back as a float: restore the integer fields of JobOptions.
static func _normalize_options(o: Dictionary) -> Dictionary:
	var out := o.duplicate(true)
	for key in ["faces", "textureSize", "lods"]:
		if out.has(key):
			out[key] = int(out[key])
	if out.has("seed"):
		out["seed"] = str(out["seed"]).get_slice(".", 0)
	return out


## Written to a temp file and renamed, so a crash never leaves half a history.
func _save_history() -> void:
	while _history.size() > HISTORY_LIMIT:
		_history.pop_back()
	var abs_path := ProjectSettings.globalize_path(HISTORY_FILE)
	DirAccess.make_dir_recursive_absolute(abs_path.get_base_dir())
	var f := FileAccess.open(abs_path + ".tmp", FileAccess.WRITE)
	if f == null:
		return
	f.store_string(JSON.stringify(_history, "  "))
	f.close()
	DirAccess.rename_absolute(abs_path + ".tmp", abs_path)


# ---------------------------------------------------------------------------- watch mode


## Images in the drop folder with what the watcher says about them (<output>.status.json).
func _refresh_drop_folder() -> void:
	if not is_visible_in_tree():
		return
	var images := PackedStringArray()
	_collect_images(DROP_DIR, "", images)
	_drop_list.clear()
	if images.is_empty():
		_drop_list.add_item(
			"(empty: drop images into %s with `propforge watch` running)" % DROP_DIR
		)
		return
	for rel in images:
		var out := GENERATED_DIR.path_join(rel.get_basename() + ".glb")
		var st := read_status(out + ".status.json")
		var i := _drop_list.add_item("%s  %s" % [rel, describe_status(st)])
		var state := str(st.get("state", ""))
		if state == "failed":
			_drop_list.set_item_custom_fg_color(i, Color(1.0, 0.45, 0.4))
			_drop_list.set_item_tooltip(i, str(st.get("error", "")))
		elif state == "done":
			_drop_list.set_item_custom_fg_color(i, Color(0.5, 0.9, 0.5))


func _collect_images(dir: String, rel: String, out: PackedStringArray) -> void:
	var here := dir.path_join(rel) if not rel.is_empty() else dir
	if out.size() >= DROP_LIST_LIMIT or not DirAccess.dir_exists_absolute(here):
		return
	for f in DirAccess.get_files_at(here):
		if f.get_extension().to_lower() in IMAGE_EXTENSIONS and out.size() < DROP_LIST_LIMIT:
			out.append(rel.path_join(f) if not rel.is_empty() else f)
	for d in DirAccess.get_directories_at(here):
		if not d.begins_with("."):
			_collect_images(dir, rel.path_join(d) if not rel.is_empty() else d, out)


## A status file, read tolerantly: {} when missing, {"state": "unreadable"} when garbled.
static func read_status(path: String) -> Dictionary:
	if not FileAccess.file_exists(path):
		return {}
	var parsed: Variant = JSON.parse_string(FileAccess.get_file_as_string(path))
	return parsed if parsed is Dictionary else {"state": "unreadable"}


## "running 45% sample", "failed: reason", "done" ... from either the flat or nested progress form.
static func describe_status(st: Dictionary) -> String:
	if st.is_empty():
		return "(waiting for the watcher)"
	var state := str(st.get("state", "unknown"))
	var stage := str(st.get("stage", ""))
	var frac := -1.0
	var prog: Variant = st.get("progress", null)
	if prog is Dictionary:
		frac = float(prog.get("fraction", -1.0))
		stage = str(prog.get("stage", stage))
	elif prog is float or prog is int:
		frac = float(prog)
	match state:
		"running":
			var pct := " %d%%" % roundi(frac * 100.0) if frac >= 0.0 else ""
			return "running%s %s" % [pct, stage]
		"failed":
			return "failed: " + str(st.get("error", "no reason given"))
	return state
