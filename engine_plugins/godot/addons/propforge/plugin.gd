@tool
extends EditorPlugin
## PropForge editor plugin: Project > Tools > "Generate 3D from image...", a FileSystem context
## menu entry on image files and the PropForge dock. All heavy work happens in `propforge serve`.

const Dock := preload("dock.gd")
const DOCK_SCENE := preload("dock.tscn")
const MENU_ITEM := "Generate 3D from image..."
const FS_MENU_ID := 74310
const IMAGE_EXTENSIONS := ["png", "jpg", "jpeg", "webp"]

var _dock: Dock
var _context_menu: RefCounted
var _hooked: Array[Dictionary] = []  # {"popup": PopupMenu, "open": Callable}


func _enter_tree() -> void:
	_dock = DOCK_SCENE.instantiate() as Dock
	_dock.setup(get_undo_redo())
	add_control_to_dock(DOCK_SLOT_RIGHT_UL, _dock)
	add_tool_menu_item(MENU_ITEM, _on_tool_menu)
	if ClassDB.class_exists("EditorContextMenuPlugin"):
		_add_context_menu_plugin()
	else:
		_hook_filesystem_popups()


func _exit_tree() -> void:
	remove_tool_menu_item(MENU_ITEM)
	if _context_menu != null:
		call("remove_context_menu_plugin", _context_menu)
		_context_menu = null
	for hook in _hooked:
		var popup: Variant = hook["popup"]  # may have been freed with the editor
		if is_instance_valid(popup):
			popup.about_to_popup.disconnect(hook["open"])
			popup.id_pressed.disconnect(_on_fs_popup_id)
	_hooked.clear()
	if _dock != null:
		_dock.shutdown()
		remove_control_from_docks(_dock)
		_dock.queue_free()
		_dock = null


func _on_tool_menu() -> void:
	_dock.open_file_dialog()


## Godot 4.4+: the official FileSystem context-menu API (called by name so 4.2 still parses us).
func _add_context_menu_plugin() -> void:
	var script: Script = load(
		get_script().resource_path.get_base_dir().path_join("context_menu.gd")
	)
	_context_menu = script.new()
	_context_menu.set("on_generate", _dock.generate_from_paths)
	const CONTEXT_SLOT_FILESYSTEM := 1
	call("add_context_menu_plugin", CONTEXT_SLOT_FILESYSTEM, _context_menu)


## Godot 4.2/4.3 fallback: add our item to the FileSystem dock's popups when they open.
func _hook_filesystem_popups() -> void:
	var fs_dock := EditorInterface.get_file_system_dock()
	for node in fs_dock.find_children("*", "PopupMenu", true, false):
		var popup := node as PopupMenu
		var open := _on_fs_popup.bind(popup)
		popup.about_to_popup.connect(open)
		popup.id_pressed.connect(_on_fs_popup_id)
		_hooked.append({"popup": popup, "open": open})


func _on_fs_popup(popup: PopupMenu) -> void:
	if _selected_images().is_empty() or popup.get_item_index(FS_MENU_ID) >= 0:
		return
	popup.add_separator()
	popup.add_item(MENU_ITEM, FS_MENU_ID)


func _on_fs_popup_id(id: int) -> void:
	if id == FS_MENU_ID:
		_dock.generate_from_paths(_selected_images())


static func _selected_images() -> PackedStringArray:
	var paths := PackedStringArray()
	if EditorInterface.has_method("get_selected_paths"):
		paths = EditorInterface.call("get_selected_paths")
	else:
		paths.append(EditorInterface.get_current_path())
	var images := PackedStringArray()
	for p in paths:
		if p.get_extension().to_lower() in IMAGE_EXTENSIONS:
			images.append(p)
	return images
