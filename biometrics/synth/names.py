"""Vietnamese personal names for the synthetic population, with realistic frequencies.

Family-name shares are the commonly cited estimates for Viet Nam (Nguyễn about 38%,
Trần 11%, Lê 9.5%, ...); given and middle names are common ones by sex. Name order is
family, middle, given, as on the ID card.
"""

from __future__ import annotations

FAMILY_NAMES: dict[str, float] = {
    "Nguyễn": 38.4, "Trần": 11.0, "Lê": 9.5, "Phạm": 7.1, "Hoàng": 2.6, "Huỳnh": 2.5,
    "Phan": 4.5, "Vũ": 2.0, "Võ": 1.9, "Đặng": 2.1, "Bùi": 2.0, "Đỗ": 1.4, "Hồ": 1.3,
    "Ngô": 1.3, "Dương": 1.0, "Lý": 0.5, "Đào": 0.4, "Đoàn": 0.4, "Vương": 0.3, "Trịnh": 0.3,
    "Trương": 0.3, "Lâm": 0.3, "Phùng": 0.2, "Mai": 0.2, "Tô": 0.2, "Hà": 0.2, "Tạ": 0.1,
    "Quách": 0.1, "Lưu": 0.1, "Châu": 0.1, "Cao": 0.1, "Đinh": 0.3, "Lương": 0.2,
}  # fmt: skip

MIDDLE_MALE = [
    "Văn",
    "Văn",
    "Văn",
    "Đức",
    "Minh",
    "Quốc",
    "Hữu",
    "Công",
    "Thanh",
    "Xuân",
    "Ngọc",
    "Quang",
    "Đình",
    "Trọng",
    "Anh",
    "Hoàng",
    "Tuấn",
    "Thế",
    "Bá",
    "Gia",
]
MIDDLE_FEMALE = [
    "Thị",
    "Thị",
    "Thị",
    "Thị",
    "Ngọc",
    "Thu",
    "Thanh",
    "Minh",
    "Hồng",
    "Mỹ",
    "Thùy",
    "Phương",
    "Kim",
    "Bích",
    "Hải",
    "Diệu",
    "Khánh",
    "Quỳnh",
    "Tuyết",
]

GIVEN_MALE = [
    "An", "Anh", "Bảo", "Bình", "Cường", "Công", "Dũng", "Duy", "Đạt", "Đức", "Giang", "Hải",
    "Hiếu", "Hòa", "Hoàng", "Hùng", "Huy", "Hưng", "Khang", "Khoa", "Kiên", "Lâm", "Linh",
    "Long", "Lợi", "Luân", "Mạnh", "Minh", "Nam", "Nghĩa", "Nhân", "Phát", "Phong", "Phúc",
    "Quân", "Quang", "Sơn", "Tài", "Tâm", "Thắng", "Thành", "Thịnh", "Tiến", "Toàn", "Trung",
    "Tú", "Tuấn", "Tùng", "Việt", "Vinh", "Vũ", "Khải", "Lộc", "Hậu", "Thái", "Định", "Kha",
]  # fmt: skip
GIVEN_FEMALE = [
    "An", "Anh", "Ánh", "Bích", "Chi", "Diễm", "Dung", "Duyên", "Giang", "Hà", "Hạnh", "Hằng",
    "Hiền", "Hoa", "Hồng", "Huệ", "Hương", "Huyền", "Lan", "Liên", "Linh", "Loan", "Ly",
    "Mai", "My", "Nga", "Ngân", "Ngọc", "Nhung", "Như", "Oanh", "Phương", "Quyên", "Quỳnh",
    "Tâm", "Thảo", "Thu", "Thủy", "Thư", "Trang", "Trâm", "Tuyết", "Uyên", "Vân", "Vy",
    "Xuân", "Yến", "Nhi", "Hậu", "Nguyệt", "Thơm", "Sen", "Lụa", "Diệp", "Khánh",
]  # fmt: skip

# Ethnic groups by GSO code with their approximate share of the population (2019 census).
ETHNIC_SHARES: dict[str, float] = {
    "01": 85.3, "02": 1.9, "03": 1.8, "06": 1.5, "05": 1.4, "08": 1.5, "07": 1.1, "04": 0.8,
    "09": 0.9, "10": 0.5, "12": 0.4, "13": 0.3, "14": 0.2, "15": 0.2, "16": 0.2, "17": 0.2,
    "18": 0.2, "19": 0.15, "20": 0.1, "21": 0.15, "22": 0.1, "23": 0.1, "24": 0.1, "25": 0.07,
}  # fmt: skip

# Religion as written on records, with approximate shares.
RELIGION_SHARES: dict[str, float] = {
    "Không": 86.3, "Công giáo": 6.1, "Phật giáo": 4.8, "Tin lành": 1.0, "Phật giáo Hòa Hảo": 1.0,
    "Cao Đài": 0.6, "Hồi giáo": 0.1,
}  # fmt: skip
