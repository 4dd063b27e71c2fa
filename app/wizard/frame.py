"""The step-by-step frame of the training wizard: a header, the pages, Back / Next / Launch.

Used instead of QWizard, for two reasons seen under a real X server:
- QWizard hides its whole page area each time a page reports a change of completeness
  (QWizardPrivate::disableUpdates) and shows it again; hiding the widget that holds keyboard focus
  moves focus to the next widget of the window. Typing a path into the Data page changed
  completeness on the first keystroke, so focus jumped to the sidebar and the next letters
  switched pages (issue 17, item 1).
- QWizard's minimum size is the largest page's; here each page sits in a scroll area, so the
  window fits a small screen whatever the page.
"""
from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFrame, QHBoxLayout, QLabel, QPushButton, QScrollArea, QStackedWidget, QVBoxLayout, QWidget,
)


class WizardPage(QWidget):
    """One step. ``initializePage`` runs each time the step is entered going forward (from the
    config as the earlier steps left it); ``validatePage`` writes the step back on Next."""

    completeChanged = Signal()

    def __init__(self, title: str, subtitle: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._title = title
        self._subtitle = subtitle

    def title(self) -> str:
        return self._title

    def subTitle(self) -> str:
        return self._subtitle

    def initializePage(self) -> None:
        """Fill the widgets from the wizard's config."""

    def validatePage(self) -> bool:
        return True

    def isComplete(self) -> bool:
        return True

    def incomplete_reason(self) -> str:
        """Why Next is greyed out, shown beside it ("" when the page is complete)."""
        return ""


class WizardFrame(QWidget):
    """Pages added with ``addPage``; ``next``/``back``/``restart`` move between them and ``accept``
    (the Launch button on the last page) is for subclasses."""

    currentIdChanged = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.pages: list[WizardPage] = []
        self._current = -1
        self.steps_label = QLabel()
        self.steps_label.setTextFormat(Qt.TextFormat.RichText)
        self.title_label = QLabel()
        self.title_label.setStyleSheet("font-weight: bold; font-size: 12pt;")
        self.subtitle_label = QLabel()
        self.subtitle_label.setWordWrap(True)
        self.stack = QStackedWidget()
        self.reason_label = QLabel()
        self.reason_label.setWordWrap(True)
        self.reason_label.setStyleSheet("color: #8a5a00;")
        self.back_button = QPushButton("< Back")
        self.next_button = QPushButton("Next >")
        self.launch_button = QPushButton("Launch")
        self.launch_button.setStyleSheet("font-weight: bold; padding: 4px 14px;")
        self.back_button.clicked.connect(self.back)
        self.next_button.clicked.connect(self.next)
        self.launch_button.clicked.connect(self.accept)
        self.extra_buttons = QHBoxLayout()

        header = QHBoxLayout()
        titles = QVBoxLayout()
        titles.addWidget(self.steps_label)
        titles.addWidget(self.title_label)
        titles.addWidget(self.subtitle_label)
        header.addLayout(titles, 1)
        self.header_tools = QHBoxLayout()
        header.addLayout(self.header_tools)
        line = QFrame()
        line.setFrameShape(QFrame.Shape.HLine)
        line.setFrameShadow(QFrame.Shadow.Sunken)
        buttons = QHBoxLayout()
        buttons.addWidget(self.reason_label, 1)
        buttons.addLayout(self.extra_buttons)
        buttons.addWidget(self.back_button)
        buttons.addWidget(self.next_button)
        buttons.addWidget(self.launch_button)
        layout = QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(line)
        layout.addWidget(self.stack, 1)
        layout.addLayout(buttons)

    def addPage(self, page: WizardPage) -> int:
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setWidget(page)
        self.stack.addWidget(scroll)
        self.pages.append(page)
        page.completeChanged.connect(self._update_buttons)
        return len(self.pages) - 1

    def currentId(self) -> int:
        return self._current

    def currentPage(self) -> WizardPage | None:
        return self.pages[self._current] if 0 <= self._current < len(self.pages) else None

    def restart(self) -> None:
        if self.pages:
            self._enter(0, initialize=True)

    def next(self) -> bool:
        """Validate the current page and enter the next one; False when the page keeps the user."""
        page = self.currentPage()
        if page is None or self._current == len(self.pages) - 1 or not page.isComplete() or not page.validatePage():
            return False
        self._enter(self._current + 1, initialize=True)
        return True

    def back(self) -> None:
        if self._current > 0:
            self._enter(self._current - 1, initialize=False)

    def accept(self) -> None:
        """The Launch button on the last page."""

    def _enter(self, index: int, initialize: bool) -> None:
        self._current = index
        page = self.pages[index]
        if initialize:
            page.initializePage()
        self.stack.setCurrentIndex(index)
        self.title_label.setText(page.title())
        self.subtitle_label.setText(page.subTitle())
        self.steps_label.setText(" › ".join(
            f"<b>{number}. {step.title()}</b>" if step is page else f"{number}. {step.title()}"
            for number, step in enumerate(self.pages, start=1)))
        self._update_buttons()
        self.currentIdChanged.emit(index)

    def _update_buttons(self) -> None:
        page = self.currentPage()
        if page is None:
            return
        complete = page.isComplete()
        last = self._current == len(self.pages) - 1
        self.back_button.setEnabled(self._current > 0)
        self.next_button.setVisible(not last)
        self.next_button.setEnabled(complete)
        self.launch_button.setVisible(last)
        self.launch_button.setEnabled(complete)
        self.reason_label.setText("" if complete else page.incomplete_reason())

    def showEvent(self, event) -> None:
        if self._current < 0:
            self.restart()
        super().showEvent(event)
