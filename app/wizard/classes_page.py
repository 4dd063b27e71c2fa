"""Classes page: which classes the student learns, and how RGB folder names map to MS class names."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QAbstractItemView, QComboBox, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QTableWidget, QTableWidgetItem,
    QVBoxLayout,
)

from app.widgets import error_label, show_error
from app.wizard.frame import WizardPage

UNMAPPED = "(same name)"


class ClassesPage(WizardPage):
    """Which classes the student learns, and how RGB folder names map to MS class names."""

    COLUMNS = ("Use", "Class (MS name)", "MS tiles", "RGB images", "Note")

    def __init__(self, wizard) -> None:
        super().__init__("Classes", "Tick the classes to learn. Rename RGB folders onto MS classes where the names differ.")
        self._wizard = wizard
        self.alignment = None
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
        self.error_label = error_label()
        mapping_box = QGroupBox("Name mapping (RGB name → MS name)")
        QVBoxLayout(mapping_box).addWidget(self.mapping_table)
        tables = QHBoxLayout()
        tables.addWidget(self.table, 3)
        tables.addWidget(mapping_box, 2)
        layout = QVBoxLayout(self)
        layout.addLayout(tables, 1)
        layout.addWidget(self.warning_label)
        layout.addWidget(self.error_label)
        self.table.itemChanged.connect(lambda _item: self.completeChanged.emit())

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
        self.refresh(selected=set(self._wizard.config.data.classes))

    def mapping(self) -> dict[str, str]:
        result = {}
        for row in range(self.mapping_table.rowCount()):
            target = self.mapping_table.cellWidget(row, 1).currentData()
            source = self.mapping_table.item(row, 0).text()
            if target and target != source:
                result[source] = target
        return result

    def refresh(self, *_args, selected: set[str] | None = None) -> None:
        """Re-align with the current mapping and rebuild the class table."""
        from sembridge_engine.data.discovery import align_classes

        summary = self._wizard.summary
        if selected is None:
            selected = set(self.checked_classes())
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
                use.setCheckState(Qt.CheckState.Checked if (not selected or name in selected) else Qt.CheckState.Unchecked)
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


