@tool
extends EditorContextMenuPlugin
## "Generate 3D from image..." in the FileSystem dock's context menu (Godot 4.4+).
## plugin.gd loads this script only when EditorContextMenuPlugin exists.

const IMAGE_EXTENSIONS := ["png", "jpg", "jpeg", "webp"]

var on_generate := Callable()


func _popup_menu(paths: PackedStringArray) -> void:
	for p in paths:
		if p.get_extension().to_lower() in IMAGE_EXTENSIONS:
			add_context_menu_item("Generate 3D from image...", _on_pressed)
			return


func _on_pressed(paths: Array) -> void:
	if on_generate.is_valid():
		on_generate.call(PackedStringArray(paths))
