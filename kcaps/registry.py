"""Objects by string name, one way for every kind (larq's and Keras's `get` / `serialize`).

Each kind of named object (squash functions, routing algorithms, projections, models, policies,
pruning criteria, ...) owns one `Registry`. Its `get` resolves a name (or passes a callable
through), its `serialize` gives the name back for `get_config`, and an unknown name is always the
same `ValueError`, naming the kind, the bad value and the valid names:

>>> from kcaps.registry import Registry
>>> colours = Registry("colour")
>>> @colours.register("red")
... def red():
...     return "#f00"
>>> colours.get("red")()
'#f00'
>>> colours.serialize(red)
'red'
>>> colours.get("blue")
Traceback (most recent call last):
...
ValueError: unknown colour 'blue'; valid colours: red
"""


class Registry:
    """A table of named objects of one kind.

    Args:
      kind: what the objects are, singular ("squash", "routing", "model"); used in errors.
      plural: the plural for errors (default `kind + "s"`).
      allow_callables: whether `get` passes a callable that is not registered through (like
        `tf.keras.activations.get`); `serialize` then refuses it, since a config must round-trip.
    """

    def __init__(self, kind, plural=None, allow_callables=True):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.allow_callables = allow_callables
        self._objects = {}

    def register(self, name, obj=None):
        """Add `obj` under `name`; usable as a decorator (`@registry.register("name")`)."""
        if obj is None:
            return lambda fn: self.register(name, fn)
        if name in self._objects and self._objects[name] is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._objects[name] = obj
        return obj

    def names(self):
        """The registered names, sorted."""
        return sorted(self._objects)

    def __contains__(self, name):
        return name in self._objects

    def __iter__(self):
        return iter(self.names())

    def get(self, identifier):
        """The object registered as `identifier`, or `identifier` itself if it is a callable."""
        if isinstance(identifier, str):
            if identifier not in self._objects:
                raise ValueError(f"unknown {self.kind} {identifier!r}; valid {self.plural}: "
                                 f"{', '.join(self.names())}")
            return self._objects[identifier]
        if callable(identifier) and self.allow_callables:
            return identifier
        raise ValueError(f"{self.kind} must be one of the names {', '.join(self.names())}"
                         + (" or a callable" if self.allow_callables else "")
                         + f"; got {identifier!r}")

    def serialize(self, obj):
        """The name `obj` is registered under, for `get_config`; a name passes through."""
        if isinstance(obj, str):
            self.get(obj)
            return obj
        for name, registered in self._objects.items():
            if registered is obj:
                return name
        raise ValueError(f"{self.kind} {obj!r} is not registered, so a config cannot name it: "
                         f"register it first (kcaps.registry) or pass one of "
                         f"{', '.join(self.names())}")
