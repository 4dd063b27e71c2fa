"""Classes page: which classes the student learns, and how RGB folder names map to MS class names."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QTableWidget, QTableWidgetItem,
    QVBoxLayout,
)

from app.widgets import error_label, show_error
from app.setting_fields import explain, spec_text
from app.wizard.frame import WizardPage

UNMAPPED = "(same name)"


class ClassesPage(WizardPage):
    """Which classes the student learns, and how RGB folder names map to MS class names."""

    COLUMNS = ("Use", "Class (MS name)", "MS tiles", "RGB images", "Note")

    def __init__(self, wizard) -> None:
        super().__init__("Classes", "Tick the classes to learn. Rename RGB folders onto MS classes where the names differ.")
        self._wizard = wizard
        self.alignment = None
        # The user's unticks, not the ticks, are remembered: a class that disappears while its RGB
        # folder is mapped elsewhere comes back ticked when the mapping is undone.
        self.unticked: set[str] = set()
        self.table = QTableWidget(0, len(self.COLUMNS))
        self.table.setHorizontalHeaderLabels(self.COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.mapping_table = QTableWidget(0, 2)
        self.mapping_table.setHorizontalHeaderLabels(("RGB folder", "maps to MS class"))
        self.mapping_table.verticalHeader().hide()
        self.mapping_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.warning_label = QLabel()
        self.warning_label.setWordWrap(True)
        self.warning_label.setStyleSheet("color: #8a5a00;")
        self.chosen_label = QLabel()
        self.chosen_label.setWordWrap(True)
        self.error_label = error_label()
        classes_box = QGroupBox(spec_text("data.classes")[0])
        classes_layout = QVBoxLayout(classes_box)
        classes_layout.addWidget(explain(self.table, "data.classes"))
        mapping_box = QGroupBox(spec_text("data.class_mapping")[0])
        QVBoxLayout(mapping_box).addWidget(explain(self.mapping_table, "data.class_mapping"))
        tables = QHBoxLayout()
        tables.addWidget(classes_box, 3)
        tables.addWidget(mapping_box, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(tables, 1)
        layout.addWidget(self.chosen_label)
        layout.addWidget(self.warning_label)
        layout.addWidget(self.error_label)
        self.table.itemChanged.connect(self._use_changed)

    def initializePage(self) -> None:
        summary = self._wizard.summary
        mapping = dict(self._wizard.config.data.class_mapping)
        self.mapping_table.blockSignals(True)
        self.mapping_table.setRowCount(len(summary.rgb_index.classes))
        for row, name in enumerate(summary.rgb_index.classes):
            self.mapping_table.setItem(row, 0, QTableWidgetItem(name))
            combo = QComboBox()
            combo.addItem(UNMAPPED, "")
            for ms_name in summary.ms_index.classes:
                combo.addItem(ms_name, ms_name)
            combo.setCurrentIndex(max(0, combo.findData(mapping.get(name, ""))))
            combo.currentIndexChanged.connect(self.refresh)
            self.mapping_table.setCellWidget(row, 1, combo)
        self.mapping_table.blockSignals(False)
        chosen = set(self._wizard.config.data.classes)
        self.unticked = set()
        self.refresh()
        if chosen:
            self.set_checked(chosen)

    def _use_changed(self, item: QTableWidgetItem) -> None:
        if item.column() == 0:
            name = self.table.item(item.row(), 1).text() if self.table.item(item.row(), 1) else ""
            if item.checkState() == Qt.CheckState.Checked:
                self.unticked.discard(name)
            else:
                self.unticked.add(name)
        self._show_chosen()
        self.completeChanged.emit()

    def _show_chosen(self) -> None:
        checked = self.checked_classes()
        self.chosen_label.setText(f"<b>The student will learn {len(checked)} class{'es' if len(checked) != 1 else ''}:"
                                  f"</b> {', '.join(checked) if checked else 'none'}")

    def mapping(self) -> dict[str, str]:
        result = {}
        for row in range(self.mapping_table.rowCount()):
            target = self.mapping_table.cellWidget(row, 1).currentData()
            source = self.mapping_table.item(row, 0).text()
            if target and target != source:
                result[source] = target
        return result

    def refresh(self, *_args) -> None:
        """Re-align with the current mapping and rebuild the class table; every shared class is
        ticked unless the user unticked it."""
        from sembridge_engine.data.discovery import align_classes

        summary = self._wizard.summary
        self.alignment = align_classes(summary.ms_index, summary.rgb_index, self.mapping())
        ms_counts = summary.ms_index.counts()
        rgb_counts: dict[str, int] = {}
        for rgb_name, count in summary.rgb_index.counts().items():
            target = self.alignment.rgb_to_ms.get(rgb_name, rgb_name)
            rgb_counts[target] = rgb_counts.get(target, 0) + count
        names = sorted(set(ms_counts) | set(rgb_counts))
        shared = set(self.alignment.shared)
        self.table.blockSignals(True)
        self.table.setRowCount(len(names))
        for row, name in enumerate(names):
            use = QTableWidgetItem()
            if name in shared:
                use.setFlags(Qt.ItemFlag.ItemIsUserCheckable | Qt.ItemFlag.ItemIsEnabled)
                use.setCheckState(Qt.CheckState.Unchecked if name in self.unticked else Qt.CheckState.Checked)
                note = ""
            else:
                use.setFlags(Qt.ItemFlag.NoItemFlags)
                note = "only MS tiles: not learnable" if name in ms_counts else "only RGB images: map it or it is ignored"
            self.table.setItem(row, 0, use)
            self.table.setItem(row, 1, QTableWidgetItem(name))
            for column, count in ((2, ms_counts.get(name, 0)), (3, rgb_counts.get(name, 0))):
                item = QTableWidgetItem(str(count))
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                self.table.setItem(row, column, item)
            note_item = QTableWidgetItem(note)
            if note:
                note_item.setForeground(Qt.GlobalColor.darkYellow)
            self.table.setItem(row, 4, note_item)
        self.table.blockSignals(False)
        warnings = [str(problem) for problem in self.alignment.problems]
        self.warning_label.setText("\n".join(f"⚠ {w}" for w in warnings))
        self.warning_label.setVisible(bool(warnings))
        self._show_chosen()
        self.completeChanged.emit()

    def checked_classes(self) -> list[str]:
        names = []
        for row in range(self.table.rowCount()):
            use = self.table.item(row, 0)
            if use is not None and use.checkState() == Qt.CheckState.Checked:
                names.append(self.table.item(row, 1).text())
        return names

    def set_checked(self, names: set[str]) -> None:
        for row in range(self.table.rowCount()):
            use = self.table.item(row, 0)
            if use.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                checked = self.table.item(row, 1).text() in names
                use.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)

    def isComplete(self) -> bool:
        return len(self.checked_classes()) >= 2

    def incomplete_reason(self) -> str:
        ticked = len(self.checked_classes())
        return (f"Tick at least two classes that both archives have ({ticked} ticked): a classifier needs two "
                "classes to tell apart.")

    def validatePage(self) -> bool:
        checked = self.checked_classes()
        if len(checked) < 2:
            show_error(self.error_label, "Tick at least two classes shared by both modalities.")
            return False
        data = self._wizard.config.data
        data.classes = [] if set(checked) == set(self.alignment.shared) else checked
        data.class_mapping = self.mapping()
        self._wizard.chosen_classes = checked
        return True


