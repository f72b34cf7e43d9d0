@tool
extends RefCounted
## Puts an imported prop into the edited scene through EditorUndoRedoManager: as a child of the
## node that was selected when the job started, or in place of a placeholder box (MeshInstance3D
## with a BoxMesh, or CSGBox3D) using its bounds for position, rotation and size.


static func is_placeholder(node: Node) -> bool:
	if node is CSGBox3D:
		return true
	return node is MeshInstance3D and (node as MeshInstance3D).mesh is BoxMesh


## Size (metres, world scale) and bottom-centre transform of a placeholder box.
static func placeholder_bounds(node: Node3D) -> Dictionary:
	var aabb: AABB = (node as VisualInstance3D).get_aabb()
	var xf := node.global_transform
	var size := (aabb.size * xf.basis.get_scale()).abs()
	var c := aabb.get_center()
	var origin := xf * Vector3(c.x, aabb.position.y, c.z)
	return {"size": size, "transform": Transform3D(xf.basis.orthonormalized(), origin)}


## Where to put the result, captured when the job starts (the selection changes meanwhile).
## Empty when no 3D scene is open.
static func capture() -> Dictionary:
	var root := EditorInterface.get_edited_scene_root()
	if root == null or not root is Node3D:
		return {}
	var selected := EditorInterface.get_selection().get_selected_nodes()
	var target: Node = selected[0] if selected.size() > 0 else root
	if not target is Node3D:
		target = root
	var ctx := {
		"scene": root.scene_file_path,
		"target": root.get_path_to(target),
		"target_name": str(target.name),
		"replace": false,
	}
	if target != root and is_placeholder(target):
		var b := placeholder_bounds(target as Node3D)
		ctx["replace"] = true
		ctx["size"] = b["size"]
		ctx["transform"] = b["transform"]
	return ctx


## Instances the imported scene as ctx says. Returns "" or why it was not placed.
static func place(
	packed: PackedScene, ctx: Dictionary, undo: EditorUndoRedoManager, node_name: String
) -> String:
	var root := EditorInterface.get_edited_scene_root()
	if root == null:
		return "no scene is open"
	if root.scene_file_path != str(ctx.get("scene", "")):
		return "the edited scene changed since the job started"
	var target := root.get_node_or_null(ctx["target"])
	if target == null:
		return "the node '%s' is gone" % ctx.get("target_name", "?")
	var node := packed.instantiate(PackedScene.GEN_EDIT_STATE_INSTANCE)
	if not node is Node3D:
		node.free()
		return "the GLB did not import as a 3D scene"
	node.name = node_name.validate_node_name()
	if bool(ctx["replace"]) and target != root:
		_replace(node as Node3D, target as Node3D, ctx, root, undo)
	else:
		_add_child(node as Node3D, target, root, undo)
	EditorInterface.get_selection().clear()
	EditorInterface.get_selection().add_node(node)
	return ""


static func _add_child(node: Node3D, parent: Node, root: Node, undo: EditorUndoRedoManager) -> void:
	undo.create_action("PropForge: add %s" % node.name)
	undo.add_do_method(parent, "add_child", node, true)
	undo.add_do_method(node, "set_owner", root)
	undo.add_do_reference(node)
	undo.add_undo_method(parent, "remove_child", node)
	undo.commit_action()


static func _replace(
	node: Node3D, box: Node3D, ctx: Dictionary, root: Node, undo: EditorUndoRedoManager
) -> void:
	var parent := box.get_parent()
	var target_xf: Transform3D = ctx["transform"]
	var local := target_xf
	if parent is Node3D:
		local = (parent as Node3D).global_transform.affine_inverse() * target_xf
	# The server made the prop as tall as the box; shrink it uniformly if its footprint is wider.
	var s := fit_scale(local_bounds(node).size, ctx["size"])
	local.basis = local.basis * Basis.from_scale(Vector3.ONE * s)
	node.transform = local
	var index := box.get_index()
	var owned: Array[Node] = []
	for n in box.find_children("*", "", true, false):
		if n.owner == root:
			owned.append(n)
	undo.create_action("PropForge: replace %s with %s" % [box.name, node.name])
	undo.add_do_method(parent, "add_child", node, true)
	undo.add_do_method(parent, "move_child", node, index)
	undo.add_do_method(node, "set_owner", root)
	undo.add_do_method(parent, "remove_child", box)
	undo.add_do_reference(node)
	undo.add_undo_method(parent, "remove_child", node)
	undo.add_undo_method(parent, "add_child", box, true)
	undo.add_undo_method(parent, "move_child", box, index)
	undo.add_undo_method(box, "set_owner", root)
	for n in owned:
		undo.add_undo_method(n, "set_owner", root)
	undo.add_undo_reference(box)
	undo.commit_action()


## Largest uniform scale (<= 1) that keeps an asset of size `asset` inside a box of size `box`.
static func fit_scale(asset: Vector3, box: Vector3) -> float:
	var s := 1.0
	for i in 3:
		if asset[i] > 0.0001 and box[i] > 0.0:
			s = minf(s, box[i] / asset[i])
	return s


## Bounds of every MeshInstance3D under `top`, in top's local space (works before it is in a tree).
static func local_bounds(top: Node3D) -> AABB:
	var out := AABB()
	var first := true
	for n in top.find_children("*", "MeshInstance3D", true, false):
		var mi := n as MeshInstance3D
		var xf := Transform3D.IDENTITY
		var p: Node = mi
		while p != null and p != top:
			if p is Node3D:
				xf = (p as Node3D).transform * xf
			p = p.get_parent()
		var box := xf * mi.get_aabb()
		out = box if first else out.merge(box)
		first = false
	return out
