"""Wizard fields that explain themselves: the name, the tooltip and a one-line "what it does / when
to change it" under each field come from the config's SettingSpec, the same text the engine
validates against and the CLI documents, so the three never disagree."""
from __future__ import annotations

import re

from PySide6.QtWidgets import QCheckBox, QFormLayout, QLabel, QVBoxLayout, QWidget

# The config's labels spell the paper's symbols in ASCII (for terminals); the app shows the symbols.
SYMBOLS = (("lambda1", "λ1"), ("lambda2", "λ2"), ("gamma", "γ"), ("delta_e", "Δe"), ("e_mu", "eμ"), ("tau", "τ"))


def symbolic(text: str) -> str:
    for ascii_name, symbol in SYMBOLS:
        text = re.sub(rf"\b{ascii_name}\b", symbol, text)
    return text


def spec_text(key: str) -> tuple[str, str]:
    """(label, help) of a config key, with the paper's symbols."""
    from sembridge_engine.config import spec_of

    spec = spec_of(key)
    return symbolic(spec.label), symbolic(spec.help)


def tooltip_html(label: str, help_text: str) -> str:
    return f"<b>{label}</b><br>{help_text}"


def help_label(text: str) -> QLabel:
    """The small grey line under a field."""
    label = QLabel(text)
    label.setWordWrap(True)
    label.setObjectName("fieldHelp")
    label.setStyleSheet("#fieldHelp { color: palette(dark); font-size: 8.5pt; }")
    return label


def explain(widget: QWidget, key: str) -> QWidget:
    """Give ``widget`` the tooltip of config ``key``; returns the widget with its help line below."""
    return explained(widget, *spec_text(key))


def explained(widget: QWidget, label: str, help_text: str) -> QWidget:
    """``widget`` with a tooltip and the help line below it."""
    widget.setToolTip(tooltip_html(label, help_text))
    box = QWidget()
    layout = QVBoxLayout(box)
    layout.setContentsMargins(0, 0, 0, 2)
    layout.setSpacing(1)
    layout.addWidget(widget)
    layout.addWidget(help_label(help_text))
    return box


def add_setting_row(form: QFormLayout, key: str, widget: QWidget, label: str | None = None) -> None:
    """A form row for config ``key``: its plain-language name, the field, the help line under it."""
    form.addRow(f"{label or spec_text(key)[0]}:", explain(widget, key))


def setting_check(key: str) -> QCheckBox:
    """A check box named and explained by config ``key`` (use ``explain`` to add its help line)."""
    label, help_text = spec_text(key)
    check = QCheckBox(label)
    check.setToolTip(tooltip_html(label, help_text))
    return check
