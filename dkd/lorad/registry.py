"""Make ``LORAD`` a member of ``peft.PeftType`` so that PEFT can register the method.

``peft.utils.register_peft_method`` accepts only names that exist in the ``PeftType`` enum,
which lists the methods shipped inside PEFT. An out-of-tree method therefore adds its member
first. Enum classes refuse new members through their public API, so the member is added the
way ``enum`` itself stores members (``_member_map_``, ``_value2member_map_``,
``_member_names_``); the result behaves as a native member: ``PeftType("LORAD")``,
``PeftType.LORAD``, equality with the string ``"LORAD"`` (it is a ``str`` enum), and JSON
round trips of ``adapter_config.json``.
"""

from __future__ import annotations

from peft.utils import PeftType


def add_peft_type(name: str) -> PeftType:
    """Return ``PeftType[name]``, creating the member if PEFT does not know it (idempotent)."""
    if name in PeftType.__members__:
        return PeftType[name]
    member = str.__new__(PeftType, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = PeftType
    member.__init__(name)
    PeftType._member_map_[name] = member
    PeftType._value2member_map_[name] = member
    PeftType._member_names_.append(name)
    type.__setattr__(PeftType, name, member)
    return member


LORAD_PEFT_TYPE = add_peft_type("LORAD")
