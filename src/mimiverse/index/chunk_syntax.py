"""Reading names and bodies of definitions out of a tree-sitter tree."""

from __future__ import annotations

from tree_sitter import Node

from mimiverse.index.chunk_languages import Spec


def rows(node: Node) -> tuple[int, int]:
    start = node.start_point.row
    end = node.end_point.row
    if node.end_point.column == 0 and end > start:
        end -= 1  # the node ends with a newline: its last row is the one before
    return start, end


def text_of(source: bytes, node: Node | None) -> str | None:
    # Sliced from the source: `node.text` of a tree parsed through a read callback
    # re-reads the source on every call (~70 us each).
    if node is None:
        return None
    return source[node.start_byte : node.end_byte].decode("utf-8", errors="replace")


def field_text(source: bytes, node: Node, name: str) -> str | None:
    return text_of(source, node.child_by_field_name(name))


def qualify(scope: str | None, name: str | None) -> str | None:
    if name is None:
        return scope
    return f"{scope}.{name}" if scope else name


_BODY_TYPES = frozenset(
    {
        "block", "class_body", "declaration_list", "field_declaration_list", "enum_body",
        "interface_body", "statement_block", "enum_variant_list", "object_type",
    }
)


def body_of(node: Node) -> Node | None:
    body = node.child_by_field_name("body")
    if body is not None:
        return body
    for child in node.named_children:
        if child.type in _BODY_TYPES:
            return child
    return None


def wrapped(node: Node, spec: Spec) -> Node | None:
    """The definition inside a decorator, export or template wrapper."""
    for name in ("definition", "declaration", "value"):
        inner = node.child_by_field_name(name)
        if inner is not None:
            return inner
    interesting = spec.functions | spec.classes | spec.variables
    for child in reversed(node.named_children):
        if child.type in interesting:
            return child
    return None


def function_variable(source: bytes, node: Node, spec: Spec) -> str | None:
    """`const f = () => {}` or a class field holding a function: the name, else None."""
    if node.type in spec.fields:
        value = node.child_by_field_name("value")
        if value is None or value.type not in spec.function_values:
            return None
        return field_text(source, node, "name") or field_text(source, node, "property")
    declarators = [c for c in node.named_children if c.type == "variable_declarator"]
    if len(declarators) != 1:
        return None
    value = declarators[0].child_by_field_name("value")
    name = declarators[0].child_by_field_name("name")
    if value is None or value.type not in spec.function_values:
        return None
    if name is None or name.type != "identifier":
        return None
    return text_of(source, name)


_DECLARATOR_NAMES = frozenset(
    {
        "identifier", "field_identifier", "qualified_identifier", "destructor_name",
        "operator_name", "scoped_identifier", "template_function",
    }
)


def function_name(source: bytes, node: Node) -> tuple[str | None, bool]:
    """The name of a function, and whether it names its class (`A::f`, Go receivers)."""
    if node.type == "method_declaration" and node.child_by_field_name("receiver") is not None:
        receiver = node.child_by_field_name("receiver")
        owner = first_of_type(source, receiver, "type_identifier")
        name = field_text(source, node, "name")
        return (f"{owner}.{name}" if owner else name), True
    name_node = node.child_by_field_name("name")
    if name_node is not None:
        return text_of(source, name_node), False
    declarator = node.child_by_field_name("declarator")
    while declarator is not None and declarator.type not in _DECLARATOR_NAMES:
        declarator = declarator.child_by_field_name("declarator")
    text = text_of(source, declarator)
    if text is None:
        return None, False
    text = "".join(text.split())
    if "::" in text:
        return text.replace("::", "."), True
    return text, False


def class_name(source: bytes, node: Node) -> str | None:
    if node.type == "impl_item":  # `impl Trait for Type`: the type owns the methods
        return first_of_type(source, node.child_by_field_name("type"), "type_identifier")
    if node.type == "type_declaration":  # Go: `type T struct {...}`
        specs = [c for c in node.named_children if c.type in ("type_spec", "type_alias")]
        return field_text(source, specs[0], "name") if len(specs) == 1 else None
    return field_text(source, node, "name")


def first_of_type(source: bytes, node: Node | None, kind: str) -> str | None:
    if node is None:
        return None
    if node.type == kind:
        return text_of(source, node)
    for child in node.named_children:
        found = first_of_type(source, child, kind)
        if found is not None:
            return found
    return None

