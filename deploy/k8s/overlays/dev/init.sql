-- One database per service, owned by the mesh's user (POSTGRES_USER).
CREATE DATABASE "order";
CREATE DATABASE payment;
CREATE DATABASE inventory;
CREATE DATABASE shipping;
