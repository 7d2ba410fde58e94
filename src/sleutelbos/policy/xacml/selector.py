"""XPath over the request's ``<Content>``: ``AttributeSelector`` (XACML 3.0 §5.30, §7.3.7) and the XPath functions
``xpath-node-count``, ``xpath-node-equal``, ``xpath-node-match`` (§A.3.15), with ``elementpath`` (XPath 1.0 parser).

Each category's ``<Content>`` child is its own document: a path starting with ``//`` or ``/`` searches only the
content of the selector's category, never the rest of the request. A selected node becomes text as the conformance
tests assume (IIIF001 ``Special.txt``): an attribute node its value, a text node its text, an element its string
value; the text is then read with the selector's ``DataType``. ``ContextSelectorId`` names an ``xpathExpression``
attribute of the same category whose nodes are the context nodes for ``Path``.

Paths are compiled when the policy is loaded, so a syntax error rejects the policy (test IIIF005). Left out: XPath
2.0 paths (``XPathVersion`` 1.0 is the one the standard names), and XPath variables.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import elementpath
from lxml import etree

from .context import EvaluationContext, missing
from .decision import STATUS_PROCESSING_ERROR, STATUS_SYNTAX_ERROR, IndeterminateError, Status
from .errors import InvalidPolicy
from .model import AttributeSelector
from .status import UnknownDataType, XacmlSyntaxError
from .values import AttributeValue, Bag, parse_value

XPATH_FUNCTIONS = {
    "urn:oasis:names:tc:xacml:3.0:function:xpath-node-count",
    "urn:oasis:names:tc:xacml:3.0:function:xpath-node-equal",
    "urn:oasis:names:tc:xacml:3.0:function:xpath-node-match",
}
XPATH_EXPRESSION = "urn:oasis:names:tc:xacml:3.0:data-type:xpathExpression"
INTEGER = "http://www.w3.org/2001/XMLSchema#integer"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


@lru_cache(maxsize=1024)
def compile_path(path: str, namespaces: tuple[tuple[str, str], ...]) -> elementpath.Selector:
    """A compiled XPath 1.0 expression; raises ``elementpath``'s syntax error for a malformed one."""
    return elementpath.Selector(path, namespaces=dict(namespaces), parser=elementpath.XPath1Parser)


def content_document(ctx: EvaluationContext, category: str) -> Any:
    """The category's content as a standalone document (parsed and cached on first use), or ``None``."""
    content = ctx.contents.get(category)
    if content is None or isinstance(content, etree._ElementTree):
        return content
    try:
        if isinstance(content, str):
            element = etree.fromstring(content.encode(), _PARSER)
        else:
            element = etree.fromstring(etree.tostring(content), _PARSER)
    except etree.XMLSyntaxError as exc:
        raise IndeterminateError(Status(STATUS_SYNTAX_ERROR, f"the <Content> of {category} is not XML: {exc}")
                                 ) from exc
    document = etree.ElementTree(element)
    ctx.contents[category] = document
    return document


def _select(selector: elementpath.Selector, root: Any) -> list[Any]:
    try:
        return list(selector.select(root))
    except elementpath.ElementPathError as exc:
        raise IndeterminateError(Status(STATUS_PROCESSING_ERROR, f"XPath evaluation failed: {exc}")) from exc


def _text(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, etree._Element):
        return "".join(node.itertext())
    if isinstance(node, bool):
        return "true" if node else "false"
    return str(node)


def _namespaces(selector: AttributeSelector) -> tuple[tuple[str, str], ...]:
    return tuple((prefix, uri) for prefix, uri in selector.namespaces if prefix)


def compile_selector(s: AttributeSelector, where: str) -> Callable[[EvaluationContext], Bag]:
    """The closure for one ``AttributeSelector``."""
    where = f"{where} <AttributeSelector Path={s.path!r}>"
    try:
        path = compile_path(s.path, _namespaces(s))
    except elementpath.ElementPathError as exc:
        raise InvalidPolicy(f"{where}: not a valid XPath expression: {exc}") from exc
    category, data_type = s.category, s.data_type
    status = missing(category, s.path, data_type, None)
    context_key = (category, s.context_selector_id, XPATH_EXPRESSION) if s.context_selector_id else None
    empty = Bag(data_type, ())

    def evaluate(ctx: EvaluationContext) -> Bag:
        document = content_document(ctx, category)
        if document is None:
            if s.must_be_present:
                raise IndeterminateError(status)
            return empty
        roots: list[Any] = [document]
        if context_key is not None:
            context = ctx.bag(context_key)
            if context is None or len(context.values) != 1:
                raise IndeterminateError(Status(STATUS_PROCESSING_ERROR,
                                                f"ContextSelectorId {s.context_selector_id!r} needs exactly one "
                                                "xpathExpression value"))
            expression = context.values[0].value
            roots = _select(compile_path(expression.path, expression.namespaces), document)
        values = []
        for root in roots:
            for node in _select(path, root):
                try:
                    values.append(parse_value(data_type, _text(node)))
                except (XacmlSyntaxError, UnknownDataType) as exc:
                    raise IndeterminateError(Status(STATUS_SYNTAX_ERROR, f"{where}: {exc}")) from exc
        if not values:
            if s.must_be_present:
                raise IndeterminateError(status)
            return empty
        return Bag(data_type, tuple(values))

    return evaluate


def _nodes(ctx: EvaluationContext, value: AttributeValue) -> list[Any]:
    expression = value.value
    document = content_document(ctx, expression.category)
    if document is None:
        return []
    try:
        path = compile_path(expression.path, expression.namespaces)
    except elementpath.ElementPathError as exc:
        raise IndeterminateError(Status(STATUS_SYNTAX_ERROR, f"not a valid XPath expression: {exc}")) from exc
    return _select(path, document)


def _descendants_or_self(node: Any) -> list[Any]:
    if isinstance(node, etree._Element):
        found: list[Any] = list(node.iter())
        for element in node.iter():
            found.extend(element.attrib.values())
        return found
    return [node]


def xpath_function(function_id: str, arguments: list[Callable[[EvaluationContext], Any]]) -> Callable[..., Any]:
    """The closure for an application of one of the §A.3.15 functions to compiled arguments."""
    from .values import AttributeValue, boolean

    name = function_id.rsplit(":", 1)[-1]
    if name == "xpath-node-count":
        (first,) = arguments

        def count(ctx: EvaluationContext) -> AttributeValue:
            return AttributeValue(INTEGER, len(_nodes(ctx, first(ctx))))

        return count
    first, second = arguments

    def identical(a: Any, b: Any) -> bool:
        return a is b or (isinstance(a, str) and isinstance(b, str) and a == b)

    if name == "xpath-node-equal":
        def equal(ctx: EvaluationContext) -> AttributeValue:
            left, right = _nodes(ctx, first(ctx)), _nodes(ctx, second(ctx))
            return boolean(any(identical(a, b) for a in left for b in right))

        return equal

    def match(ctx: EvaluationContext) -> AttributeValue:
        left, right = _nodes(ctx, first(ctx)), _nodes(ctx, second(ctx))
        below = [d for b in right for d in _descendants_or_self(b)]
        return boolean(any(identical(a, b) for a in left for b in below))

    return match
