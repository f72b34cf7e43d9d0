@tool
extends RefCounted
## Incremental Server-Sent Events parser (WHATWG rules) fed with raw network chunks.
## Lines are split on bytes (CR, LF, CRLF): UTF-8 never uses those bytes inside a character,
## so a chunk boundary can fall anywhere.

var last_event_id := ""
var comments := 0

var _buf := PackedByteArray()
var _data := PackedStringArray()
var _event := ""
var _has_data := false


## Returns the complete events in this chunk: [{"id", "event", "data"}, ...].
func feed(chunk: PackedByteArray) -> Array[Dictionary]:
	_buf.append_array(chunk)
	var out: Array[Dictionary] = []
	var start := 0
	var i := 0
	var n := _buf.size()
	while i < n:
		var c: int = _buf[i]
		if c == 10 or c == 13:
			if c == 13 and i + 1 >= n:
				break  # maybe the first half of CRLF: wait for the next chunk
			_line(_buf.slice(start, i).get_string_from_utf8(), out)
			if c == 13 and _buf[i + 1] == 10:
				i += 1
			start = i + 1
		i += 1
	_buf = _buf.slice(start)
	return out


func _line(line: String, out: Array[Dictionary]) -> void:
	if line.is_empty():
		_dispatch(out)
		return
	if line.begins_with(":"):
		comments += 1
		return
	var field := line
	var value := ""
	var colon := line.find(":")
	if colon >= 0:
		field = line.substr(0, colon)
		value = line.substr(colon + 1)
		if value.begins_with(" "):
			value = value.substr(1)
	match field:
		"event":
			_event = value
		"data":
			_data.append(value)
			_has_data = true
		"id":
			last_event_id = value


func _dispatch(out: Array[Dictionary]) -> void:
	if _has_data:
		var name := _event if not _event.is_empty() else "message"
		out.append({"id": last_event_id, "event": name, "data": "\n".join(_data)})
	_data = PackedStringArray()
	_has_data = false
	_event = ""
